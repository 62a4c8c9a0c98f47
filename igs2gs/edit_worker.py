"""A background worker that edits views while the splats keep training.

With InstructPix2Pix on its own device (`--pipeline.ip2p-device cuda:1`), the training loop hands the
worker fresh renders of the next views of the round and goes on training with the newest edits; it
collects finished edits at every step without waiting. Jobs are edited in the order they were
submitted; every submitted job yields exactly one result (an edit, or the error that stopped it).
"""

from __future__ import annotations

import atexit
import contextlib
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, List, Optional

import torch
from torch import Tensor

from igs2gs.edit_streams import wait_until_ready
from igs2gs.editor import EditSettings

_STOP = object()


@dataclass
class EditJob:
    """One view to edit: its render and original photo ([1, 3, H, W] in [0, 1]) and what to compute."""

    view: int
    render: Tensor
    original: Tensor
    settings: EditSettings
    seed: int
    ready: Optional[Any] = None
    """A CUDA event recorded after `render` and `original` were made; the worker waits for it (None: ready)."""


@dataclass
class EditResult:
    """The edit of `job` ([1, 3, H, W] on the CPU; None when the edit function discarded it), or its error."""

    job: EditJob
    image: Optional[Tensor] = None
    error: Optional[BaseException] = None
    seconds: float = 0.0
    """How long the edit function ran, per job of its batch."""


class EditWorkerError(RuntimeError):
    """The worker thread stopped on an error; the run cannot go on editing."""


EditBatch = Callable[[List[EditJob]], List[Optional[Tensor]]]
"""Edits jobs together: one image ([1, 3, H, W]) or None (discarded) per job."""


class EditWorker:
    """Runs `edit` on the submitted jobs, in order, on a background thread: up to `batch_size` queued jobs
    per call, on `stream` when given (a CUDA stream of the editor's device). Use as a context manager."""

    def __init__(
        self, edit: EditBatch, max_pending: int = 2, batch_size: int = 1, stream: Optional[torch.cuda.Stream] = None
    ) -> None:
        if max_pending < 1 or batch_size < 1:
            raise ValueError(f"max_pending and batch_size must be >= 1, got {max_pending} and {batch_size}")
        self.edit = edit
        self.batch_size = batch_size
        self.stream = stream
        self._jobs: "queue.Queue" = queue.Queue(maxsize=max_pending)
        self._results: "queue.Queue[EditResult]" = queue.Queue()
        self._pending = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="igs2gs-edit-worker", daemon=True)
        self._thread.start()
        # A worker thread still inside CUDA when the interpreter exits aborts the process: stop it first.
        atexit.register(self.close)

    @property
    def pending(self) -> int:
        """Jobs submitted whose results have not been collected yet."""
        return self._pending

    @property
    def can_submit(self) -> bool:
        """True when a `submit` would not wait for the worker."""
        return not self._closed and not self._jobs.full()

    def submit(self, *jobs: EditJob) -> None:
        """Queue jobs to be edited together (waits while `max_pending` submissions are queued)."""
        if self._closed:
            raise EditWorkerError("submit() after close(): the edit worker has stopped")
        self._jobs.put(jobs)
        self._pending += len(jobs)

    def poll(self) -> List[EditResult]:
        """The results finished so far, in submission order, without waiting."""
        return self._collect(block=False)

    def wait(self) -> List[EditResult]:
        """Wait for every pending job; return their results in submission order."""
        return self._collect(block=True)

    def _collect(self, block: bool) -> List[EditResult]:
        results = []
        while self._pending > 0:
            try:
                result = self._results.get(block=block, timeout=None if block else 0)
            except queue.Empty:
                break
            self._pending -= 1
            results.append(result)
        return results

    def close(self, timeout: float = 60.0) -> None:
        """Stop the worker after the job in progress; queued jobs are dropped. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        while True:  # drop queued jobs so the stop marker fits
            try:
                self._pending -= len(self._jobs.get_nowait())
            except queue.Empty:
                break
        self._jobs.put(_STOP)
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def __enter__(self) -> "EditWorker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _next_batch(self) -> List:
        """The next submission (waiting for it) and those queued behind it, up to `batch_size` jobs; may end
        with _STOP."""
        item = self._jobs.get()
        if item is _STOP:
            return [_STOP]
        batch = list(item)
        while len(batch) < self.batch_size:
            try:
                item = self._jobs.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return batch + [_STOP]
            batch.extend(item)
        return batch

    def _run(self) -> None:
        with torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext():
            self._serve()

    def _serve(self) -> None:
        while True:
            batch = self._next_batch()
            jobs = [job for job in batch if job is not _STOP]
            if jobs:
                started = time.perf_counter()
                try:
                    for job in jobs:
                        wait_until_ready(job.ready, job.render.device)
                    images = self.edit(jobs)
                    seconds = (time.perf_counter() - started) / len(jobs)
                    for job, image in zip(jobs, images, strict=True):
                        image = None if image is None else image.detach().float().cpu()
                        self._results.put(EditResult(job, image=image, seconds=seconds))
                except BaseException as error:  # noqa: BLE001 (handed to the training thread, which decides)
                    seconds = (time.perf_counter() - started) / len(jobs)
                    for job in jobs:
                        self._results.put(EditResult(job, error=error, seconds=seconds))
            if len(jobs) < len(batch):
                return
