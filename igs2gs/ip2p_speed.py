"""Placement, attention and compilation switches of the InstructPix2Pix editor (`igs2gs/ip2p.py`).

Each function changes how the same computation runs, not what it computes, except for rounding:
the memory savers of the original code (model CPU offload, attention slicing) and the speed-ups
(fused QKV projections, SDPA backend choice, torch.compile with an on-disk cache, CUDA graphs).
diffusers, accelerate and torch's compiler are imported inside the functions that use them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable, Optional

import torch

_INSTALL_ACCELERATE = "pip install accelerate==1.15.0"


def cpu_offload_chain(modules: Sequence[torch.nn.Module], device: torch.device) -> list[Any]:
    """Keep `modules` on the CPU; each moves to `device` when it runs and moves the one before it back
    (diffusers' `enable_model_cpu_offload`, through accelerate's hooks). Returns the hooks."""
    if device.type != "cuda":
        raise ValueError(f"model CPU offload moves models to a CUDA device; the editor runs on {device}")
    try:
        from accelerate import cpu_offload_with_hook
    except ImportError as err:  # pragma: no cover - the pinned stack installs it
        raise ImportError(f"model CPU offload needs accelerate: {_INSTALL_ACCELERATE}") from err
    for module in modules:
        module.to("cpu")
    torch.cuda.empty_cache()
    hooks, hook = [], None
    for module in modules:
        _, hook = cpu_offload_with_hook(module, device, prev_module_hook=hook)
        hooks.append(hook)
    return hooks


def remove_offload(hooks: Sequence[Any], modules: Sequence[torch.nn.Module], device: torch.device) -> None:
    """Undo `cpu_offload_chain`: remove the hooks and move every module to `device`."""
    for hook in hooks:
        hook.remove()
    for module in modules:
        module.to(device)


def use_sdpa(unet: torch.nn.Module) -> None:
    """Fused scaled-dot-product attention in every attention layer (diffusers' default processor)."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    unet.set_attn_processor(AttnProcessor2_0())


def fuse_qkv(unet: Any) -> None:
    """One matmul for the query, key and value projections of self-attention (key and value for
    cross-attention); the weights are concatenated, so the products are the same."""
    unet.fuse_qkv_projections()


def sdpa_backends(names: Sequence[str]) -> list[Any]:
    """`torch.nn.attention.SDPBackend` members by name, e.g. ["CUDNN_ATTENTION", "FLASH_ATTENTION"]."""
    from torch.nn.attention import SDPBackend

    unknown = [name for name in names if not hasattr(SDPBackend, name)]
    if unknown:
        known = [name for name in dir(SDPBackend) if name.isupper()]
        raise ValueError(f"unknown SDPA backends {unknown}; choose from {known}")
    return [getattr(SDPBackend, name) for name in names]


def prefer_sdpa_backends(backends: list[Any]) -> contextlib.AbstractContextManager[Any]:
    """Inside the block, SDPA tries `backends` in this order (torch >= 2.6)."""
    from torch.nn.attention import sdpa_kernel

    return sdpa_kernel(backends, set_priority=True)


def use_compile_cache(folder: Path) -> Path:
    """Keep inductor's compiled kernels (FX graph cache, Triton kernels) in `folder`, so a later run of the
    same shapes loads them instead of compiling. TORCHINDUCTOR_CACHE_DIR, when the user set it, wins. Returns the
    folder.

    Importing torch._dynamo sets TORCHINDUCTOR_CACHE_DIR to inductor's default (/tmp/torchinductor_USER) in the
    environment, so a value equal to that default is taken for torch's own, not the user's: until this was found,
    every run kept its kernels and saved pieces there instead of in `folder`."""
    current = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if current and os.path.abspath(current) != _torch_default_cache_dir():
        return Path(current)
    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder)
    import torch._inductor.config as inductor_config

    inductor_config.fx_graph_cache = True
    return folder


def _torch_default_cache_dir() -> Optional[str]:
    """Inductor's default cache folder, or None where this torch does not say."""
    try:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir
    except ImportError:  # pragma: no cover - the pinned torch has it
        return None
    return os.path.abspath(default_cache_dir())


def compile_step(fn: Callable[..., Any], cuda_graphs: bool = False) -> "CompiledThenRunOnly":
    """torch.compile `fn` for fixed shapes (a new shape compiles anew instead of going dynamic).

    With `cuda_graphs` the compiled function replays as a CUDA graph (mode "reduce-overhead"); each call
    starts a new graph step and its outputs are cloned, because the next replay overwrites the graph's
    output buffers.
    """
    mode = "reduce-overhead" if cuda_graphs else None
    return CompiledThenRunOnly(torch.compile(fn, mode=mode, dynamic=False), cuda_graphs=cuda_graphs)


class CompiledThenRunOnly:
    """A torch.compile'd function that compiles until `stop_compiling`, then only runs what it compiled:
    calls that no compiled graph fits (a new shape, layout or constant) run eagerly (dynamo's run-only mode).

    Compiling traces modules through process-wide hooks (FX's module-call patch and its "is tracing" flag)
    that other threads' module calls run into: a compile while the splats train or the viewer renders breaks
    them (H200: splatfacto's compiled `get_viewmat` raised "using FX to symbolically trace a dynamo-optimized
    function" when a round's first edit recompiled). So a training run compiles in the editor's warm-up edit,
    before those threads start, and never after.
    """

    def __init__(self, compiled: Callable[..., Any], cuda_graphs: bool = False) -> None:
        self.compiled = compiled
        self.cuda_graphs = cuda_graphs
        self._run = compiled

    @property
    def compiling(self) -> bool:
        """True until `stop_compiling`."""
        return self._run is self.compiled

    def stop_compiling(self) -> None:
        """From now on, run the compiled graphs where their guards pass and eagerly elsewhere."""
        self._run = torch._dynamo.run(self.compiled)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self.cuda_graphs:
            return self._run(*args, **kwargs)
        torch.compiler.cudagraph_mark_step_begin()
        out = self._run(*args, **kwargs)
        return tuple(o.clone() for o in out) if isinstance(out, tuple) else out.clone()
