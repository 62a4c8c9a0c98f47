"""Where a thread's wall time goes, by sampling its Python stack (a small stand-in for py-spy, which the GPU
machine lacks): a daemon thread reads `sys._current_frames()` every `interval_s` and adds the time since its
previous read to the watched thread's innermost frame and to every function on its stack, and to each other
thread's innermost function. Unlike cProfile it does not slow the watched thread's Python, and unlike
torch.profiler it sees the time between ops (Python, waits for the GIL, blocking calls).
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from types import FrameType
from typing import Optional


def _where(frame: FrameType) -> str:
    code = frame.f_code
    return f"{code.co_filename.rsplit('/site-packages/', 1)[-1]}:{frame.f_lineno} {code.co_name}"


def _function(frame: FrameType) -> str:
    code = frame.f_code
    return f"{code.co_filename.rsplit('/site-packages/', 1)[-1]}:{code.co_firstlineno} {code.co_name}"


class StackSampler:
    """Samples thread `thread_id` (default: the calling thread) from `start()` to `stop()`."""

    def __init__(self, thread_id: Optional[int] = None, interval_s: float = 0.001) -> None:
        self.thread_id = thread_id if thread_id is not None else threading.get_ident()
        self.interval_s = interval_s
        self.leaves: Counter = Counter()
        self.inclusive: Counter = Counter()
        self.others: Counter = Counter()  # (thread name, innermost function) of the other threads
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="igs2gs-stack-sampler", daemon=True)
        self.seconds = 0.0

    def start(self) -> "StackSampler":
        self._started = time.perf_counter()
        self._thread.start()
        return self

    def stop(self) -> "StackSampler":
        self._stop.set()
        self._thread.join()
        self.seconds = time.perf_counter() - self._started
        return self

    def _run(self) -> None:
        own = threading.get_ident()
        names: dict = {}
        last = time.perf_counter()
        while not self._stop.wait(self.interval_s):
            frames = sys._current_frames()
            now = time.perf_counter()
            weight, last = now - last, now  # the time since the last sample: a thread holding the GIL delays this one
            frame = frames.get(self.thread_id)
            if frame is None:
                continue
            self.samples += 1
            self.leaves[_where(frame)] += weight
            seen = set()
            while frame is not None:
                name = _function(frame)
                if name not in seen:
                    seen.add(name)
                    self.inclusive[name] += weight
                frame = frame.f_back
            for ident, other in frames.items():
                if ident in (own, self.thread_id):
                    continue
                if ident not in names:
                    names = {t.ident: t.name for t in threading.enumerate()}
                self.others[(names.get(ident, str(ident)), _function(other))] += weight

    def report(self, title: str, rows: int = 40) -> str:
        """Innermost frames and functions on the stack of the watched thread, as shares of the sampled time (each
        sample stands for the time since the previous one); the other threads' innermost functions likewise."""
        n = max(1e-9, sum(self.leaves.values()))
        rate = self.samples / max(self.seconds, 1e-9)
        lines = [f"{title}: {self.samples} samples in {self.seconds:.1f} s ({rate:.0f}/s)"]
        lines.append("\nwatched thread, innermost frame (% of sampled time):")
        lines += [f"  {100 * count / n:5.1f}%  {where}" for where, count in self.leaves.most_common(rows)]
        lines.append("\nwatched thread, functions on the stack (% of sampled time):")
        lines += [f"  {100 * count / n:5.1f}%  {where}" for where, count in self.inclusive.most_common(rows)]
        lines.append("\nother threads, innermost function (% of sampled time):")
        others = self.others.most_common(rows)
        lines += [f"  {100 * count / n:5.1f}%  {name}: {where}" for (name, where), count in others]
        return "\n".join(lines) + "\n"
