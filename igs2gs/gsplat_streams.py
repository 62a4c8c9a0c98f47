"""gsplat 1.4.0's spherical-harmonics kernels on the caller's CUDA stream.

gsplat launches `compute_sh_fwd` and `compute_sh_bwd` (`gsplat/cuda/csrc/compute_sh_*.cu`) without a
stream argument, so they run on the legacy default stream whatever stream the caller is on; every other
kernel it launches uses torch's current stream. Work on a torch side stream (created non-blocking) is not
ordered with the legacy default stream: a splatfacto step trained on a side stream would read colours
before they are computed and free their inputs early. That is the most likely cause of the illegal memory
access seen on an H200 when training ran on a high-priority stream next to background edits
(igs2gs/edit_streams.py). With this fix, a whole default run on a high-priority stream and the GPU test of
these kernels on a side stream ran clean on an H200 (benchmarks/RESULTS.md).

`order_sh_kernels_with_current_stream()` wraps the two calls: when the current stream is not the default
one, the default stream first waits for it and the current stream then waits for the default one, so the
kernels run in the caller's order. Blocks freed on the current stream afterwards are reused only by work
queued after that wait. On the default stream, and without CUDA, the calls go through unchanged.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import torch

SH_KERNELS = ("compute_sh_fwd", "compute_sh_bwd")


def on_callers_stream(kernel: Callable[..., Any]) -> Callable[..., Any]:
    """`kernel`, launched on the legacy default stream, ordered within the caller's current CUDA stream."""

    @functools.wraps(kernel)
    def ordered(*args: Any, **kwargs: Any) -> Any:
        if not torch.cuda.is_available():
            return kernel(*args, **kwargs)
        current, default = torch.cuda.current_stream(), torch.cuda.default_stream()
        if current == default:
            return kernel(*args, **kwargs)
        default.wait_stream(current)
        out = kernel(*args, **kwargs)
        current.wait_stream(default)
        return out

    return ordered


def order_sh_kernels_with_current_stream() -> None:
    """Make gsplat's SH kernels follow the current stream (idempotent; see the module docstring)."""
    import gsplat.cuda._wrapper as wrapper

    factory = wrapper._make_lazy_cuda_func
    if getattr(factory, "orders_sh_kernels", False):
        return

    @functools.wraps(factory)
    def make_lazy_cuda_func(name: str) -> Callable[..., Any]:
        func = factory(name)
        return on_callers_stream(func) if name in SH_KERNELS else func

    make_lazy_cuda_func.orders_sh_kernels = True  # type: ignore[attr-defined]
    wrapper._make_lazy_cuda_func = make_lazy_cuda_func
