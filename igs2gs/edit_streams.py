"""CUDA streams that let InstructPix2Pix edit on the training GPU while the splats train.

The background worker edits on a stream of its own; training keeps the default stream, as nerfstudio and
gsplat expect. (Moving training to a high-priority stream was tried: on an H200 the run then failed with an
illegal memory access at the first background edit, so it was dropped.) A job's render and photo are made
on the training stream: the worker waits for an event recorded after them before reading them. Everything
here is a no-op off CUDA.
"""

from __future__ import annotations

from typing import Optional, Union

import torch

Device = Union[torch.device, str]


def editing_stream(device: Device) -> Optional[torch.cuda.Stream]:
    """A new stream on the editor's CUDA `device` (None elsewhere)."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    return torch.cuda.Stream(device=device)


def ready_event(tensor: torch.Tensor) -> Optional[torch.cuda.Event]:
    """An event recorded on the current stream after the work that produced `tensor` (None off CUDA)."""
    if not tensor.is_cuda:
        return None
    event = torch.cuda.Event()
    event.record(torch.cuda.current_stream(tensor.device))
    return event


def wait_until_ready(event: Optional[torch.cuda.Event], device: Device) -> None:
    """Make the calling thread's current stream on `device` wait for `event` (no-op for None)."""
    if event is not None:
        torch.cuda.current_stream(torch.device(device)).wait_event(event)
