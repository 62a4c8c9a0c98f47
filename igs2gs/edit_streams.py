"""CUDA streams that let InstructPix2Pix edit on the training GPU while the splats train.

The background worker edits on a stream of its own. Training keeps the default stream unless
`--pipeline.training-stream-priority` moves it to a highest-priority stream, so that the GPU schedules a
training step's small kernels ahead of the editor's long ones instead of queueing them behind (the default
stream has the lowest priority, so the editor cannot be put below it). That needs gsplat's SH kernels to
follow the stream (igs2gs/gsplat_streams.py). Measured on an H200 it gained nothing: the shared GPU is
bound by its total work, not by the order of its kernels. A job's render and photo are made on the training stream: the
worker waits for an event recorded after them before reading them. Everything here is a no-op off CUDA.
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


def prioritise_training(device: Device) -> Optional[torch.cuda.Stream]:
    """Move the calling thread's later work on the CUDA `device` to a highest-priority stream, ordered after the
    work queued so far; return it (None off CUDA). Call it before the run makes its tensors, so that they belong
    to that stream's memory pool."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    current = torch.cuda.current_stream(device)
    if current.priority < 0:
        return current  # moved already
    low, high = torch.cuda.Stream.priority_range()
    stream = torch.cuda.Stream(device=device, priority=min(low, high))  # the lower number is the higher priority
    stream.wait_stream(current)
    torch.cuda.set_stream(stream)
    return stream


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
