"""A background worker that edits views while the splats keep training.

With InstructPix2Pix on its own device (`--pipeline.ip2p-device cuda:1`), the training loop hands the
worker fresh renders of the next views of the round and goes on training with the newest edits; it
collects finished edits at every step without waiting. Jobs are edited in the order they were
submitted; every submitted job yields exactly one result (an edit, or the error that stopped it).
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Deque, List, Optional, Protocol, Tuple, Union, runtime_checkable

import torch
from torch import Tensor

from igs2gs.edit_streams import wait_until_ready
from igs2gs.editor import EditSettings

_STOP = object()
RECEIVE_POLL_S = 0.02
"""How long the worker waits at a time for a `PolledEdits` batch before it looks for a newly submitted one."""


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
    batch_seconds: float = 0.0
    """How long it ran for the whole batch: the batch's first edit began that long before it returned."""


class EditWorkerError(RuntimeError):
    """The worker thread stopped on an error; the run cannot go on editing."""


EditBatch = Callable[[List[EditJob]], List[Optional[Tensor]]]
"""Edits jobs together: one image ([1, 3, H, W]) or None (discarded) per job."""


@runtime_checkable
class PipelinedEdits(Protocol):
    """An editor elsewhere (e.g. another process, `edit_process.py`) that takes the next batch while it edits one,
    so that it never waits between batches for the worker to collect and send."""

    def send(self, jobs: List[EditJob]) -> None:
        """Queue a batch to be edited after those sent before it."""

    def receive(self) -> List[Optional[Tensor]]:
        """Wait for the oldest batch sent and not yet received: one image or None per job, or its error."""


@runtime_checkable
class PolledEdits(PipelinedEdits, Protocol):
    """A `PipelinedEdits` that says when it has room for another batch and can be waited for with a timeout, so the
    worker sends a batch submitted meanwhile instead of waiting for an older one first. An edit process whose compiled
    child takes over (`edit_process.py`) has room there while its uncompiled child still edits older batches."""

    def can_send(self, in_flight: int) -> bool:
        """Whether a batch sent now would wait behind fewer than `in_flight` batches."""

    def receive(self, timeout: Optional[float] = None) -> Optional[List[Optional[Tensor]]]:  # type: ignore[override]
        """As `PipelinedEdits.receive`; with `timeout`, None when the oldest batch's edits have not come by then."""


class EditWorker:
    """Runs `edit` on the submitted jobs, in order, on a background thread: up to `batch_size` queued jobs
    per call, on `stream` when given (a CUDA stream of the editor's device). Use as a context manager.

    A `PipelinedEdits` editor is sent the next batch while it edits one (`in_flight` batches at most), and its
    results are collected in the order sent."""

    def __init__(
        self,
        edit: Union[EditBatch, PipelinedEdits],
        max_pending: int = 2,
        batch_size: int = 1,
        stream: Optional[torch.cuda.Stream] = None,
        in_flight: int = 2,
    ) -> None:
        if max_pending < 1 or batch_size < 1:
            raise ValueError(f"max_pending and batch_size must be >= 1, got {max_pending} and {batch_size}")
        self.edit = edit
        self.batch_size = batch_size
        self.in_flight = in_flight
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

    def _next_batch(self, block: bool = True) -> List:
        """The next submission (waiting for it, unless not `block`: then [] when there is none) and those queued
        behind it, up to `batch_size` jobs; may end with _STOP."""
        try:
            item = self._jobs.get(block=block)
        except queue.Empty:
            return []
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
            if isinstance(self.edit, PipelinedEdits):
                self._serve_pipelined(self.edit)
            else:
                self._serve()

    def _put_results(self, jobs: List[EditJob], images: List[Optional[Tensor]], seconds: float) -> None:
        """One result per job of a batch that took `seconds`."""
        for job, image in zip(jobs, images, strict=True):
            image = None if image is None else image.detach().float().cpu()
            self._results.put(EditResult(job, image=image, seconds=seconds / len(jobs), batch_seconds=seconds))

    def _put_error(self, jobs: List[EditJob], error: BaseException, seconds: float) -> None:
        for job in jobs:
            self._results.put(EditResult(job, error=error, seconds=seconds / len(jobs), batch_seconds=seconds))

    def _serve_pipelined(self, edit: PipelinedEdits) -> None:
        """Send each batch as soon as it is submitted (up to `in_flight` batches ahead, or while a `PolledEdits` has
        room), receive them in order. A `PolledEdits` is waited for `RECEIVE_POLL_S` at a time, so that a batch
        submitted meanwhile goes out while an older one is still being edited."""
        sent: Deque[Tuple[List[EditJob], float]] = collections.deque()
        polled = isinstance(edit, PolledEdits)
        stopping = False
        last = time.perf_counter()
        while sent or not stopping:
            room = not sent or (edit.can_send(self.in_flight) if polled else len(sent) < self.in_flight)
            if not stopping and room:
                batch = self._next_batch(block=not sent)
                if batch:
                    jobs = [job for job in batch if job is not _STOP]
                    stopping = len(jobs) < len(batch)
                    if jobs:
                        try:
                            for job in jobs:
                                wait_until_ready(job.ready, job.render.device)
                            edit.send(jobs)
                            sent.append((jobs, time.perf_counter()))
                        except BaseException as error:  # noqa: BLE001 (handed to the training thread)
                            self._put_error(jobs, error, 0.0)
                    continue
            jobs, sent_at = sent[0]
            started = max(sent_at, last)  # from when the editor finished the batch before: this one's own time
            try:
                images = edit.receive(timeout=RECEIVE_POLL_S) if polled else edit.receive()
                if images is None:
                    continue  # not yet: a batch submitted meanwhile may go out first
                sent.popleft()
                last = time.perf_counter()
                self._put_results(jobs, images, last - started)
            except BaseException as error:  # noqa: BLE001
                sent.popleft()
                last = time.perf_counter()
                self._put_error(jobs, error, last - started)

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
                    self._put_results(jobs, images, time.perf_counter() - started)
                except BaseException as error:  # noqa: BLE001 (handed to the training thread, which decides)
                    self._put_error(jobs, error, time.perf_counter() - started)
            if len(jobs) < len(batch):
                return
