"""gsplat's SH kernels follow the caller's stream (igs2gs/gsplat_streams.py); tests/test_gpu.py checks the ordering
on a GPU, these check the wiring."""

from __future__ import annotations

import gsplat.cuda._wrapper as wrapper

import igs2gs.igs2gs_config  # noqa: F401 (installs the wrapper, as nerfstudio's import of the method does)
from igs2gs.gsplat_streams import on_callers_stream, order_sh_kernels_with_current_stream


def test_the_sh_kernels_are_wrapped_and_the_others_are_not(monkeypatch):
    assert getattr(wrapper._make_lazy_cuda_func, "orders_sh_kernels", False)
    order_sh_kernels_with_current_stream()  # a second install changes nothing
    assert not getattr(wrapper._make_lazy_cuda_func.__wrapped__, "orders_sh_kernels", False)
    for name in ("compute_sh_fwd", "compute_sh_bwd"):
        assert wrapper._make_lazy_cuda_func(name).__name__ == "call_cuda"  # functools.wraps of gsplat's function
        assert hasattr(wrapper._make_lazy_cuda_func(name), "__wrapped__")
    assert not hasattr(wrapper._make_lazy_cuda_func("rasterize_to_pixels_fwd"), "__wrapped__")


def test_a_wrapped_kernel_is_called_once_with_its_arguments_off_cuda():
    calls = []

    def kernel(*args, **kwargs):
        calls.append((args, kwargs))
        return "colors"

    assert on_callers_stream(kernel)(3, "dirs", masks=None) == "colors"
    assert calls == [((3, "dirs"), {"masks": None})]
