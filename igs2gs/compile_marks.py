"""Marks in the compile cache that say a compiled InstructPix2Pix for this run is already there.

With `--pipeline.ip2p-process` and `--pipeline.ip2p-compile` (edit_process.py), a first run edits uncompiled
while a second process compiles the editor for later runs. When an earlier run compiled the same editor, the
cache holds it and loading it takes seconds, not the minute of a first compile: the editing process then
compiles at once, before its first edit. The compiling process leaves a mark for what it compiled, inside the
compile cache folder (so clearing the cache clears the marks): one empty file per torch version, GPU model and
index, edit sizes and batch size, editor switches and source of the compiled code. A mark whose cache entries are gone
costs one compile without edits meanwhile (about a minute on an H200), never a wrong edit.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path
from typing import Any, Optional, Sequence, Tuple

import torch

_COMPILED_MODULES = ("igs2gs.ip2p", "igs2gs.ip2p_speed", "igs2gs.ddim", "igs2gs.fast_group_norm")
"""The modules whose code torch.compile traces in the editor (a change there changes the compiled graphs)."""

_EDITOR_SWITCHES = (
    "ip2p_model",
    "ip2p_use_full_precision",
    "ip2p_fast_kernels",
    "ip2p_cuda_graphs",
    "edit_batch_size",
    "edit_max_side",
)


def compile_cache_folder(config: Any) -> Optional[Path]:
    """Where the compiled kernels go: TORCHINDUCTOR_CACHE_DIR when set, else the config's ip2p_compile_cache
    (None: torch's default folder, which gets no marks)."""
    folder = os.environ.get("TORCHINDUCTOR_CACHE_DIR") or getattr(config, "ip2p_compile_cache", None)
    return None if folder is None else Path(folder).expanduser()


def compile_mark(config: Any, device: str, sizes: Sequence[Tuple[int, int]], batch_size: int) -> Optional[Path]:
    """The mark's path for compiling this editor at these edit sizes and batch size on `device`; None when there
    is no cache folder to hold it or the device is not a GPU."""
    folder = compile_cache_folder(config)
    if folder is None or torch.device(device).type != "cuda":
        return None
    what = {
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(torch.device(device)),
        "device": str(torch.device(device)),
        "sizes": [list(size) for size in sizes],
        "batch_size": batch_size,
        "switches": {name: str(getattr(config, name, None)) for name in _EDITOR_SWITCHES},
        "code": _source_digest(),
    }
    digest = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:24]
    return folder / "igs2gs-compiled" / digest


def _source_digest() -> str:
    digest = hashlib.sha256()
    for name in _COMPILED_MODULES:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin:
            digest.update(Path(spec.origin).read_bytes())
    return digest.hexdigest()


def leave_mark(mark: Optional[Path]) -> None:
    """Record that the compile cache now holds what `mark` names."""
    if mark is not None:
        mark.parent.mkdir(parents=True, exist_ok=True)
        mark.touch()
