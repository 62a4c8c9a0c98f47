"""Let nerfstudio's splatfacto train, render and export without CUDA.

splatfacto (nerfstudio 1.1.5) only runs on CUDA for two reasons:

1. it renders with gsplat's CUDA `rasterization`, imported by name into `nerfstudio.models.splatfacto`;
2. it moves two tensors with a hard-coded `.cuda()`: the SH features of the seed points in `populate_modules` and the
   intrinsics `K` in `get_outputs`. Without CUDA these raise, even with `--machine.device-type cpu`.

`install_cpu_fallback()` replaces the module's `rasterization` with a dispatcher that uses gsplat's CUDA function for
CUDA tensors and `igs2gs.cpu_rasterizer.rasterization_torch` otherwise, and, only when CUDA is unavailable, makes
those two `.cuda()` calls keep their tensor where it is. gsplat's `DefaultStrategy` refinement (grow, split,
duplicate, prune, reset opacity: `gsplat/strategy/default.py`, `ops.py`) is plain PyTorch on the parameters' device
and needs no change.
"""

from __future__ import annotations

import functools
import sys
import warnings
from typing import Any, Callable

import torch

from igs2gs.cpu_rasterizer import rasterization_torch

SPLATFACTO_MODULE = "nerfstudio.models.splatfacto"
_CPU_WARNING = (
    "splatfacto got Gaussians on {device}, so it renders with igs2gs's pure-PyTorch rasterizer "
    "(igs2gs.cpu_rasterizer.rasterization_torch). It is slow and meant for tiny scenes and tests; "
    "train real scenes on a CUDA device."
)
_warned_cpu = False


def _warn_cpu_once(device: torch.device) -> None:
    global _warned_cpu
    if not _warned_cpu:
        _warned_cpu = True
        warnings.warn(_CPU_WARNING.format(device=device), RuntimeWarning, stacklevel=3)


def _make_dispatcher(cuda_rasterization: Callable[..., Any]) -> Callable[..., Any]:
    """A `rasterization` that picks the backend at call time from the device of `means`."""

    @functools.wraps(cuda_rasterization)
    def rasterization(*args: Any, **kwargs: Any) -> Any:
        means = kwargs["means"] if "means" in kwargs else args[0]
        if means.is_cuda:
            return cuda_rasterization(*args, **kwargs)
        _warn_cpu_once(means.device)
        return rasterization_torch(*args, **kwargs)

    rasterization.cuda_rasterization = cuda_rasterization  # the original, kept reachable
    return rasterization


def _install_rasterization_dispatcher() -> None:
    import nerfstudio.models.splatfacto as splatfacto

    current = getattr(splatfacto, "rasterization", None)
    if getattr(current, "cuda_rasterization", None) is not None:
        return  # already installed
    if current is None:
        # splatfacto prints "Please install gsplat>=1.0.0" and carries on when its import fails.
        raise ImportError(
            "nerfstudio.models.splatfacto has no `rasterization`: install gsplat, `pip install gsplat==1.4.0`."
        )
    splatfacto.rasterization = _make_dispatcher(current)


def _install_splatfacto_cuda_guard() -> None:
    """Without CUDA, make `Tensor.cuda()` called from splatfacto's own code return the tensor unchanged.

    The cause: splatfacto writes `torch.zeros(...).float().cuda()` (`populate_modules`) and
    `camera.get_intrinsics_matrices().cuda()` (`get_outputs`) instead of taking the device from the model, so it
    cannot be built or rendered on a machine without CUDA. The guard only acts when `torch.cuda.is_available()` is
    False and the caller's frame belongs to `nerfstudio.models.splatfacto`; every other `.cuda()` call, and every call
    on a machine with CUDA, goes to PyTorch's own method unchanged (and raises as before where it would).
    """
    original = torch.Tensor.cuda
    if getattr(original, "_igs2gs_splatfacto_guard", False):
        return  # already installed

    @functools.wraps(original)
    def cuda(self: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if not torch.cuda.is_available() and sys._getframe(1).f_globals.get("__name__") == SPLATFACTO_MODULE:
            return self
        return original(self, *args, **kwargs)

    cuda._igs2gs_splatfacto_guard = True
    cuda.original = original
    torch.Tensor.cuda = cuda


def install_cpu_fallback() -> None:
    """Make `nerfstudio.models.splatfacto` work without CUDA; idempotent, cheap, safe to call at plugin import.

    With CUDA available it only installs the rasterization dispatcher, which sends CUDA tensors to gsplat's own
    `rasterization`.
    """
    _install_rasterization_dispatcher()
    if torch.cuda.device_count() == 0:  # NVML's count: initialises no CUDA at the plugin's import (process_start.py)
        _install_splatfacto_cuda_guard()
