"""diffusers' models imported without peft, which the editor never uses.

When peft is installed, importing diffusers' UNet imports it (diffusers' LoRA support: `diffusers.hooks` and
`diffusers.loaders.peft`), and peft imports transformers' auto classes and every model they list. On the lent H200
machines py-spy put it at 3.0 s of the 8.2 s an edit process took to build InstructPix2Pix, with two edit processes
importing side by side; timed alone, the import is 0.75 s shorter without peft (benchmarks/RESULTS.md). The
editor loads plain InstructPix2Pix weights and never a LoRA adapter, so `without_peft` makes diffusers see no
peft, before its models are imported.
"""

from __future__ import annotations


def without_peft() -> None:
    """Make diffusers, in this process, act as if peft were not installed (its LoRA loading then says so)."""
    from diffusers.utils import import_utils

    if hasattr(import_utils, "_peft_available"):
        import_utils._peft_available = False
