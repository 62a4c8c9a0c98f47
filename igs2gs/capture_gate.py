"""Keeps CUDA graph captures in one thread apart from the training steps of another.

While a thread captures a CUDA graph, torch puts each device's default random generator in capture mode:
a random draw on that device from any other thread fails ("Offset increment outside graph capture
encountered unexpectedly"). A splatfacto training step draws (its random background, densification), so a
background edit worker must not capture InstructPix2Pix's graphs while a step runs.

The training thread marks its steps (`enter_step` / `leave_step`) and the stretches in which it only waits
for the worker (`waiting`); a capture (`capturing`) waits for the training thread to be outside a step, and
the training thread's next step waits for the capture to end. Without a training thread marking steps, or
in the training thread itself, captures go ahead at once. A capture that cannot start in time is skipped
(the caller runs eagerly), so a training thread that died inside a step cannot hang the worker.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator, Optional


class CaptureGate:
    """A training thread's steps on one side, graph captures of other threads on the other."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._captures = 0  # captures waiting or in progress
        self._stepping: Optional[int] = None  # ident of the training thread while it is inside a step

    def enter_step(self) -> None:
        """Training thread, before a step: wait for captures in progress to end."""
        with self._cond:
            self._cond.wait_for(lambda: self._captures == 0)
            self._stepping = threading.get_ident()

    def leave_step(self) -> None:
        """Training thread, after a step (also safe to call when no step is in progress)."""
        with self._cond:
            self._stepping = None
            self._cond.notify_all()

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """Training thread, inside a step, while it only waits for the worker: captures may run meanwhile."""
        with self._cond:
            stepping, self._stepping = self._stepping, None
            self._cond.notify_all()
        try:
            yield
        finally:
            if stepping is not None:
                self.enter_step()

    @contextlib.contextmanager
    def capturing(self, timeout: float = 30.0) -> Iterator[bool]:
        """Any thread, around a capture: wait until no training step runs (the training thread itself goes ahead).
        Yields False when a step still runs after `timeout` seconds (a training thread stopped inside a step): the
        caller must not capture then."""
        me = threading.get_ident()
        with self._cond:
            self._captures += 1
            free = self._cond.wait_for(lambda: self._stepping in (None, me), timeout=timeout)
        try:
            yield free
        finally:
            with self._cond:
                self._captures -= 1
                self._cond.notify_all()


GATE = CaptureGate()
"""The process's gate: CUDA's default generators, which the capture affects, are per process."""
