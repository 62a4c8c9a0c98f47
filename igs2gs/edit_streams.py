"""CUDA streams that let InstructPix2Pix edit on the training GPU while the splats train.

The background worker edits on a stream of its own. Training keeps the default stream unless
`--pipeline.training-stream-priority` moves it to a highest-priority stream, so that the GPU schedules a
training step's small kernels ahead of the editor's long ones instead of queueing them behind (the default
stream has the lowest priority, so the editor cannot be put below it). That needs gsplat's SH kernels to
follow the stream (igs2gs/gsplat_streams.py). Measured on an H200 it gained nothing: the shared GPU is
bound by its total work, not by the order of its kernels. `--pipeline.ip2p-sm-fraction` instead confines the editor's
kernels to a share of the GPU's multiprocessors (a CUDA green context), so a training kernel finds free ones at once
instead of waiting for an editor kernel's blocks to retire. A job's render and photo are made on the training stream:
the worker waits for an event recorded after them before reading them. Everything here is a no-op off CUDA.
"""

from __future__ import annotations

from typing import Any, Optional, Union

import torch
from nerfstudio.utils.rich_utils import CONSOLE

Device = Union[torch.device, str]

_green_contexts: list[Any] = []
"""The green contexts made so far, kept alive for their streams."""


def editing_stream(device: Device, sm_fraction: float = 1.0) -> Optional[torch.cuda.Stream]:
    """A new stream on the editor's CUDA `device` (None elsewhere). With `sm_fraction` < 1 its kernels run on that
    share of the device's multiprocessors only (`partitioned_stream`)."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    if sm_fraction < 1.0:
        stream = partitioned_stream(device, sm_fraction)
        if stream is not None:
            return stream
    return torch.cuda.Stream(device=device)


def partitioned_stream(device: torch.device, sm_fraction: float) -> Optional[torch.cuda.Stream]:
    """A stream whose kernels use at most `sm_fraction` of the CUDA `device`'s multiprocessors, from a CUDA green
    context (torch >= 2.11, driver >= 12.8); None, with a warning, where torch or the driver cannot make one.
    The driver rounds the count up to its granularity (8 on Hopper)."""
    total = torch.cuda.get_device_properties(device).multi_processor_count
    count = max(1, int(total * sm_fraction))
    try:
        from torch.cuda.green_contexts import GreenContext

        context = GreenContext.create(num_sms=count, device_id=device.index or 0)
        stream = context.Stream()
    except (ImportError, AttributeError, RuntimeError, TypeError) as err:
        CONSOLE.log(
            f"igs2gs: cannot confine the editor to {count} of {total} multiprocessors ({err}); it shares them all"
        )
        return None
    _green_contexts.append(context)
    CONSOLE.log(f"igs2gs: the editor runs on {count} of {total} multiprocessors of {device}; training has the rest")
    return stream


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
