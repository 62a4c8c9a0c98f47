"""InstructPix2Pix in a process of its own, for runs that edit on a GPU of its own (`--pipeline.ip2p-process`).

With the editor on a second GPU, the edit worker (`edit_worker.py`) is a thread of the training process, and
both launch their CUDA kernels from Python, taking turns at the GIL. On 2 x H200 (benchmarks/RESULTS.md)
training steps averaged 8.8-9.0 ms in such runs against 5.0 ms for a plain step alone, whether the editor was
eager or compiled (a compiled round edits in 13 instead of 21 s, and the run was no faster). Here the worker
thread only forwards each batch of jobs to a child process and waits for the edits (a blocking queue read, which
releases the GIL); the child loads the editor, runs the warm-up edit (and compiles there, with
`--pipeline.ip2p-compile`), and edits.

- Jobs travel as CPU tensors through torch.multiprocessing queues (shared memory); edits come back the same
  way, one [1, 3, h, w] image or None (discarded by the child's edit guard) per job.
- The child loads while the training process sets up: loading in another process cannot meet the training
  process's threads (see editor_warm_up.py for what loading and compiling change process-wide).
- The child's errors come back with their traceback and are raised on the worker thread as the editor's
  own would be; a child that dies is reported with its exit code (`EditProcessError`).
- Ctrl-C reaches the training process only (the child ignores SIGINT); the child stops when told, when
  the training process is gone, or with the training process's exit (a daemon process).
"""

from __future__ import annotations

import atexit
import os
import queue
import signal
import traceback
from typing import Any, Callable, List, Optional, Sequence, Tuple

import torch
import torch.multiprocessing as mp

from igs2gs.edit_worker import EditJob
from igs2gs.editor import EditSettings

_STOP = None
_POLL_S = 1.0
"""How often a waiting side checks that the other process is still there."""

EditorBuilder = Callable[[Any, Any], Any]
"""Builds the editor from the pipeline config and a device; a module-level function (it is pickled by name)."""


class EditProcessError(RuntimeError):
    """The edit process stopped or could not start its editor."""


def _default_builder() -> EditorBuilder:
    from igs2gs.fast_edits import build_ip2p_editor

    return build_ip2p_editor


class EditProcess:
    """Edits batches of `EditJob`s in a child process: `process(jobs)` returns one image or None per job."""

    def __init__(
        self,
        config: Any,
        device: Any,
        warm_up_sizes: Sequence[Tuple[int, int]],
        batch_size: int,
        settings: EditSettings,
        builder: Optional[EditorBuilder] = None,
    ) -> None:
        context = mp.get_context("spawn")  # CUDA cannot be used in a forked child
        self._jobs = context.Queue()
        self._results = context.Queue()
        args = (builder or _default_builder(), config, str(device), list(warm_up_sizes), batch_size, settings)
        self._process = context.Process(
            target=_serve, args=(*args, self._jobs, self._results, os.getpid()), name="igs2gs-editor", daemon=True
        )
        self._process.start()
        self._ready = False
        self._closed = False
        atexit.register(self.close)

    @property
    def alive(self) -> bool:
        return self._process.is_alive()

    def __call__(self, jobs: List[EditJob]) -> List[Optional[torch.Tensor]]:
        """Edit `jobs` (their renders must be ready) in the child; waits for the editor on the first call."""
        if self._closed:
            raise EditProcessError("the edit process was closed")
        if not self._ready:
            self._receive()  # the child's "ready", or its start-up error
            self._ready = True
        self._jobs.put([_moved(job, "cpu") for job in jobs])
        return self._receive()

    def _receive(self) -> Any:
        """The child's next message; raises the error it sent, or EditProcessError when it is gone."""
        while True:
            try:
                ok, value, trace = self._results.get(timeout=_POLL_S)
            except queue.Empty:
                if not self._process.is_alive():
                    raise EditProcessError(
                        f"the InstructPix2Pix process stopped (exit code {self._process.exitcode}); see its output "
                        "above for why"
                    ) from None
                continue
            if ok:
                return value
            value.add_note(f"raised in the InstructPix2Pix process:\n{trace}")
            raise value

    def close(self, timeout: float = 30.0) -> None:
        """Stop the child after the batch in progress. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._process.is_alive():
            self._jobs.put(_STOP)
            self._process.join(timeout)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(timeout)


def _moved(job: EditJob, device: Any) -> EditJob:
    """The job with its images on `device` and no CUDA event: jobs travel as CPU tensors (the worker thread waited
    for the event) and the child moves them to its editor's device before resizing them there."""
    return EditJob(job.view, job.render.to(device), job.original.to(device), job.settings, job.seed, ready=None)


def _picklable(error: BaseException) -> BaseException:
    """`error` if it can travel between processes, else a RuntimeError with its type and message."""
    import pickle

    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:  # noqa: BLE001 (any pickling failure)
        return RuntimeError(f"{type(error).__name__}: {error}")


def _serve(
    builder: EditorBuilder,
    config: Any,
    device: str,
    warm_up_sizes: List[Tuple[int, int]],
    batch_size: int,
    settings: EditSettings,
    jobs: Any,
    results: Any,
    parent: int,
) -> None:
    """The child: build and warm up the editor, then edit each batch of jobs until told to stop."""
    from igs2gs.edit_guard import EditGuard
    from igs2gs.editor_warm_up import warm_up_editor
    from igs2gs.fast_edits import edit_job_batch

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the training process's to handle
    if torch.device(device).type == "cuda":
        torch.cuda.set_device(torch.device(device))
    try:
        editor = builder(config, device)
        warm_up_editor(editor, warm_up_sizes, batch_size, settings, device)
    except BaseException as error:  # noqa: BLE001 (sent to the training process, which decides)
        results.put((False, _picklable(error), traceback.format_exc()))
        return
    results.put((True, "ready", ""))
    guard = EditGuard()
    while True:
        try:
            batch = jobs.get(timeout=_POLL_S)
        except queue.Empty:
            if os.getppid() != parent:  # the training process is gone
                return
            continue
        if batch is _STOP:
            return
        try:
            batch = [_moved(job, device) for job in batch]
            with torch.no_grad():
                edited = edit_job_batch(lambda: editor, guard, batch, config.edit_max_side)
            images = [None if image is None else image.detach().float().cpu() for image in edited]
            results.put((True, images, ""))
        except BaseException as error:  # noqa: BLE001
            results.put((False, _picklable(error), traceback.format_exc()))
