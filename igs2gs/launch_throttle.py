"""Keep a background editor's queued CUDA work short, so it never waits inside a kernel launch holding the GIL.

InstructPix2Pix queues kernels far faster than the GPU runs them (an eager 8-view denoising step takes about
10 ms to launch and 74 ms to run on an H200), so an editor running as a thread of the training process soon
fills its stream's launch queue. From then on each launch waits in the CUDA driver for a free slot, and torch
does not release Python's GIL there: the training thread gets the interpreter only when the editor's thread is
made to hand it over, in switch-interval turns (5 ms by default). On 2 x H200, with the editor as a thread on
the second GPU, training steps averaged 8.8-9.0 ms against 5.0 ms alone (benchmarks/RESULTS.md).

`LaunchThrottle.mark` records an event after each piece of queued work (a denoising step, a VAE chunk); once
more than `ahead` marks are pending it waits for the oldest. `torch.cuda.Event.synchronize` releases the GIL
and, with a blocking-sync event, sleeps instead of spinning, so the editor waits without holding the
interpreter while `ahead` pieces keep its GPU busy. Off CUDA, and with `ahead` 0, it does nothing.
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Deque, Optional, Protocol, Union

import torch


class _Event(Protocol):
    def record(self, stream: Optional[torch.cuda.Stream] = None) -> None: ...

    def synchronize(self) -> None: ...


def _blocking_event() -> _Event:
    return torch.cuda.Event(blocking=True)


class LaunchThrottle:
    """At most `ahead` marked pieces of a thread's CUDA work in flight (0: no bound)."""

    def __init__(self, ahead: int, new_event: Callable[[], _Event] = _blocking_event) -> None:
        if ahead < 0:
            raise ValueError(f"ahead must be 0 (no bound) or a positive number of queued pieces, got {ahead}")
        self.ahead = ahead
        self._new_event = new_event
        self._pending: Deque[_Event] = deque()

    def mark(self, device: Union[str, torch.device]) -> None:
        """End of a piece of work queued on `device`'s current stream; wait while more than `ahead` are queued."""
        device = torch.device(device)
        if self.ahead == 0 or device.type != "cuda":
            return
        event = self._new_event()
        event.record(torch.cuda.current_stream(device))
        self._pending.append(event)
        while len(self._pending) > self.ahead:
            self._pending.popleft().synchronize()

    @property
    def pending(self) -> int:
        """Marks not yet waited for."""
        return len(self._pending)
