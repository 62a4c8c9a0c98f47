"""Eager functions replayed as CUDA graphs, one graph per input signature, without torch.compile.

InstructPix2Pix's denoising step launches about a thousand small kernels per UNet call. Run eagerly, the
deep (small) levels of the UNet wait on the CPU launching them, and in a background round the worker
thread's launches compete with the training thread for the CPU. A captured graph launches the same kernels
in one call: the arithmetic is unchanged and nothing is compiled, so capture costs two warm-up calls.

`GraphedCalls(fn)` captures `fn` the first time it sees a signature (shapes, strides, dtypes and devices of
its tensor arguments, values of the others) and replays it afterwards: the arguments are copied into the
graph's static inputs and the outputs are copied out, since the next replay overwrites them. Graphs built
with one `pool` share their memory; that is safe because replays run one after another on one stream and
each output is copied before the next replay. A capture that fails leaves the function eager.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Dict, Hashable, Optional, Tuple

import torch

Signature = Tuple[Hashable, ...]


def signature(args: Tuple[Any, ...]) -> Signature:
    """What a captured graph depends on: the layout of each tensor argument, the value of each other one."""
    return tuple(
        (tuple(a.shape), a.stride(), a.dtype, a.device) if isinstance(a, torch.Tensor) else ("value", a) for a in args
    )


def _copy_out(out: Any) -> Any:
    """A copy of a graph's outputs (tensors or tuples of tensors), made on the current stream."""
    if isinstance(out, tuple):
        return tuple(_copy_out(o) for o in out)
    return out.clone()


class _Graph:
    """One captured graph with its static inputs and outputs."""

    def __init__(self, graph: torch.cuda.CUDAGraph, inputs: Tuple[Any, ...], outputs: Any) -> None:
        self.graph, self.inputs, self.outputs = graph, inputs, outputs

    def __call__(self, args: Tuple[Any, ...]) -> Any:
        for static, arg in zip(self.inputs, args):
            if isinstance(static, torch.Tensor):
                static.copy_(arg)
        self.graph.replay()
        return _copy_out(self.outputs)


class GraphedCalls:
    """`fn(*args)` replayed from CUDA graphs (see the module docstring); calls off CUDA run eagerly."""

    def __init__(
        self,
        fn: Callable[..., Any],
        pool: Optional[Tuple[int, int]] = None,
        warmup: int = 2,
        max_graphs: int = 4,
        name: str = "",
    ) -> None:
        self.fn = fn
        self.pool = pool
        self.warmup = warmup
        self.max_graphs = max_graphs
        self.name = name or getattr(fn, "__name__", "function")
        self._graphs: Dict[Signature, _Graph] = {}
        self._failed = False

    @property
    def num_graphs(self) -> int:
        """How many signatures have a captured graph."""
        return len(self._graphs)

    def __call__(self, *args: Any) -> Any:
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        if self._failed or not tensors or any(t.device.type != "cuda" or t.requires_grad for t in tensors):
            return self.fn(*args)
        key = signature(args)
        graph = self._graphs.get(key)
        if graph is None:
            if len(self._graphs) >= self.max_graphs:
                return self.fn(*args)
            graph = self._capture(args)
            if graph is None:
                return self.fn(*args)
            self._graphs[key] = graph
        return graph(args)

    def _capture(self, args: Tuple[Any, ...]) -> Optional[_Graph]:
        """Warm up and capture `fn` on a side stream ordered after the current one; None if capture fails."""
        device = next(a.device for a in args if isinstance(a, torch.Tensor))
        static = tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in args)
        current = torch.cuda.current_stream(device)
        side = torch.cuda.Stream(device)
        side.wait_stream(current)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.stream(side):
                for _ in range(self.warmup):  # lazy initialisation, cuBLAS workspaces, cuDNN plans: not capturable
                    self.fn(*static)
                # "thread_local": other threads (training, while edits run in the background) keep using CUDA freely.
                with torch.cuda.graph(graph, pool=self.pool, stream=side, capture_error_mode="thread_local"):
                    outputs = self.fn(*static)
        except RuntimeError as err:
            self._failed = True
            warnings.warn(f"igs2gs: could not capture {self.name} as a CUDA graph, running it eagerly ({err})")
            return None
        finally:
            current.wait_stream(side)
        if self.pool is None:
            self.pool = graph.pool()  # later signatures share this graph's memory
        return _Graph(graph, static, outputs)
