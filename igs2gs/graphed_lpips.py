"""The LPIPS training loss replayed as CUDA graphs: its forward and backward in two launches.

A plain igs2gs step on a GPU is bound by the CPU launching kernels (NOTES.md); measured on an H200, the
LPIPS term (AlexNet on the render and the training image, forward and backward) was about half of a
10.6 ms step while its kernels take well under a millisecond. `torch.cuda.make_graphed_callables`
captures the loss once per image size and replays it; the arithmetic is the same kernels.

Graphs are captured up front, for the training images' sizes, when the pipeline is built: a capture must
not overlap CUDA work of other threads, and the viewer and the background edit worker start after it.
Sizes seen for the first time later, and everything on the CPU, run eagerly.
"""

from __future__ import annotations

from typing import Callable, Dict, Iterable, Tuple

import torch

Size = Tuple[int, int]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class GraphedLPIPS:
    """`loss(pred, gt)` for [1, 3, H, W] images in [0, 1], from CUDA graphs where captured."""

    def __init__(self, loss: LossFn, max_sizes: int = 4) -> None:
        self.loss = loss
        self.max_sizes = max_sizes
        self._graphs: Dict[Tuple[Size, torch.device], LossFn] = {}

    @property
    def sizes(self) -> list[Size]:
        """The image sizes with a captured graph."""
        return [size for size, _ in self._graphs]

    def capture(self, sizes: Iterable[Size], device: torch.device) -> None:
        """Capture the loss for each (height, width) in `sizes` on the CUDA `device`; more than `max_sizes`
        distinct sizes capture none (every call then runs eagerly)."""
        device = torch.device(device)
        sizes = sorted(set(sizes))
        if device.type != "cuda" or not sizes or len(sizes) > self.max_sizes:
            return
        for height, width in sizes:
            pred = torch.rand(1, 3, height, width, device=device, requires_grad=True)
            gt = torch.rand(1, 3, height, width, device=device)
            self._graphs[((height, width), device)] = torch.cuda.make_graphed_callables(self.loss, (pred, gt))
        torch.cuda.synchronize(device)

    def __call__(self, pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        graphed = self._graphs.get((tuple(pred.shape[-2:]), pred.device))
        if graphed is None or not pred.requires_grad or gt.requires_grad or torch.is_autocast_enabled():
            return self.loss(pred, gt)
        # The graph's output is a static buffer that the next replay overwrites: hand out a copy.
        return graphed(pred, gt).clone()
