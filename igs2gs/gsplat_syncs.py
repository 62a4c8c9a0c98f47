"""gsplat 1.4.0's `rasterization` without the host-device synchronisation of its `torch.inverse`.

With spherical harmonics, gsplat's `rasterization` (`gsplat/rendering.py`) inverts the view matrices with
`torch.inverse` to find the camera centres. On CUDA, `torch.inverse` checks the result for singular matrices and
so waits for the GPU (PyTorch documents this for `torch.linalg.inv`), once per training step. In round 2 of a
default bear edit on one H200 the step spent 6 % of its time on that line (benchmarks/RESULTS.md, stack
samples): with InstructPix2Pix on the same GPU, the wait includes the editor's queued kernels.

`invert_without_sync()` gives gsplat's rendering module a view of `torch` whose `inverse` is
`torch.linalg.inv_ex(...).inverse`: the same LU kernels and the same result, without the check. View matrices
are rigid transforms, never singular. Everything else the module reads from `torch` is torch's own.
"""

from __future__ import annotations

import types
from typing import Any, Optional

import torch


class TorchWithUncheckedInverse(types.ModuleType):
    """`torch`, with `inverse` that does not check for singular matrices (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__("torch")

    def __getattr__(self, name: str) -> Any:
        value = getattr(torch, name)
        setattr(self, name, value)  # found in the instance from now on, at the speed of a module attribute
        return value

    @staticmethod
    def inverse(input: torch.Tensor, *, out: Optional[torch.Tensor] = None) -> torch.Tensor:  # noqa: A002 (torch's)
        if out is not None:
            return torch.inverse(input, out=out)
        return torch.linalg.inv_ex(input).inverse


def invert_without_sync() -> None:
    """Make gsplat's rendering module invert view matrices without a synchronisation (idempotent)."""
    import gsplat.rendering as rendering

    if not isinstance(rendering.torch, TorchWithUncheckedInverse):
        rendering.torch = TorchWithUncheckedInverse()
