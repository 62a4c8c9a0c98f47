"""splatfacto's image metrics imported without transformers (torchmetrics 1.x).

splatfacto builds its PSNR and LPIPS metrics from torchmetrics. Importing any of torchmetrics imports all of its
functional metrics, and with transformers installed (InstructPix2Pix's text encoder needs it) its text and multimodal
metrics (BERTScore, InfoLM, CLIPScore) import transformers' auto classes at module level: 1.7 s of py-spy samples of
a bear run's start on the lent GPU machine, in a training process that never runs a text model (the editor of two
GPUs lives in a process of its own, and `ns-viewer`, `ns-render` and `ns-export` never edit).

While the model is built, torchmetrics is told that transformers is missing, through its own availability flags, the
moment it defines them. Those metrics then stay unavailable in this process, as they would without transformers;
nerfstudio and igs2gs use none of them. transformers itself is untouched: the editor imports it as before. If
torchmetrics was imported earlier, or its flags have other names, nothing changes.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import sys
from types import ModuleType
from typing import Iterator, Optional, Sequence

FLAGS_MODULE = "torchmetrics.utilities.imports"
"""torchmetrics' module of optional-dependency flags."""

TRANSFORMERS_FLAGS = ("_TRANSFORMERS_AVAILABLE", "_TRANSFORMERS_GREATER_EQUAL_4_4", "_TRANSFORMERS_GREATER_EQUAL_4_10")
"""Its flags that say transformers can be imported."""


class _FlagsLoader(importlib.abc.Loader):
    """Runs torchmetrics' flags module, then turns its transformers flags off."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Optional[ModuleType]:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)
        for flag in TRANSFORMERS_FLAGS:
            if hasattr(module, flag):
                setattr(module, flag, False)


class _FlagsFinder(importlib.abc.MetaPathFinder):
    """Finds torchmetrics' flags module as the other finders do, with `_FlagsLoader` around its loader."""

    def find_spec(
        self, fullname: str, path: Optional[Sequence[str]], target: Optional[ModuleType] = None
    ) -> Optional[importlib.machinery.ModuleSpec]:
        if fullname != FLAGS_MODULE:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _FlagsLoader(spec.loader)
                return spec
        return None


@contextlib.contextmanager
def torchmetrics_without_transformers() -> Iterator[None]:
    """Within this block, a first import of torchmetrics finds transformers unavailable (see the module docstring)."""
    if FLAGS_MODULE in sys.modules:
        yield
        return
    finder = _FlagsFinder()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
