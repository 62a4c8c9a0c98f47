"""InstructPix2Pix in a process of its own, for runs that edit on a GPU of its own (`--pipeline.ip2p-process`).

With the editor on a second GPU, the edit worker (`edit_worker.py`) is a thread of the training process, and
both launch their CUDA kernels from Python, taking turns at the GIL. On 2 x H200 (benchmarks/RESULTS.md)
training steps averaged 8.8-9.0 ms in such runs against 5.0 ms for a plain step alone, whether the editor was
eager or compiled. Here the worker thread only forwards each batch of jobs to a child process and waits for the
edits (a blocking queue read, which releases the GIL).

- The child starts when the pipeline starts to be built, and loads the editor while the training process caches
  its images, loads the checkpoint and starts the viewer: loading in another process cannot meet the training
  process's threads (see editor_warm_up.py for what loading and compiling change process-wide).
- With `--pipeline.ip2p-compile`, edits never wait for a compile. The editing child edits uncompiled from the first
  batch while a second child builds the compiled editor and compiles it in its warm-up edits: from the compile
  cache an earlier run filled it was ready 33-35 s after its start, the first time an image size is met 107-116 s
  (2 x H200). Once compiled, that child takes over from the next batch and the uncompiled one stops: a batch is
  always edited whole by one child, and both give the same images up to rounding. Before, a run with a filled
  cache loaded the compiled editor in the editing child before its first edit, and training waited 13.6-20.6 s at
  round 2 for round 1; with the hand-over it waited 8.1-12.0 s (benchmarks/RESULTS.md). A run that ends before its
  compile is done lets it finish, for at most `COMPILE_WAIT_S`, so that later runs find it in the cache (Ctrl-C
  skips that).
- The children are forked from the training process where that is safe (process_start.py: CUDA editors, CUDA not
  yet initialised, no other thread), so they start with torch and nerfstudio imported; otherwise they are spawned.
  Spawned children start light: they get the editor's options (editor_options.py), not the pipeline config, and do
  not re-run the training process's main module, which multiprocessing's spawn does by default (for `ns-train`
  that imports every nerfstudio method). On a 2-core CPU a child was ready 1.0 s after its start instead of 4.9 s
  under an `ns-train`-like main (stand-in editor; InstructPix2Pix's own imports and loading come after).
- Jobs travel through torch.multiprocessing queues in shared-memory buffers that are reused from batch to batch
  (shared_batches.py); edits come back the same way, one [1, 3, h, w] image or None (discarded by the child's edit
  guard) per job. The edit worker sends the next batch while the child edits one (`send` / `receive`), so the child
  does not wait for the round trip between two batches; a child that was taken over from stops once its last edits
  were received, since it hands them over. The worker polls `receive` and asks `can_send` (`edit_worker.PolledEdits`):
  the compiled child gets its batches as soon as it is ready, whatever the uncompiled one still edits, and while the
  compile runs the uncompiled child holds one batch at a time, so none is queued there when the compiled one is
  ready.
  Each editing child says at its end where its time went per view: editing, receiving the batches, waiting for them.
- The child's errors come back with their traceback and are raised on the worker thread as the editor's
  own would be; a child that dies is reported with its exit code (`EditProcessError`). A compile that fails
  leaves the edits uncompiled (and says so).
- Ctrl-C reaches the training process only (the children ignore SIGINT); they stop when told, when the
  training process is gone, or with the training process's exit (daemon processes).
- At a run's end the children are told to stop (`stop`) at the last step and exit while the trainer saves its last
  checkpoint and the journal's last writes; the trainer waits for them after that (`join`). A child's exit, with its
  CUDA context, took about 2 s on an H200 (log times, benchmarks/RESULTS.md), and a run with a helper
  (edit_lanes.py) waited for two such exits one after the other before it saved. A child that is done now skips
  the interpreter's teardown (`_leave`): its edits were all received by then.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import copy
import functools
import os
import queue
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Iterator, List, Optional, Sequence, Tuple

import torch

from igs2gs.edit_worker import EditJob
from igs2gs.editor import EditSettings
from igs2gs.process_start import ONE_THREAD, forked_target, is_fork, start_context
from igs2gs.shared_batches import BatchBuffers, SharedBatches, edits_into, moved

STOP = ("stop", None)
_POLL_S = 1.0
"""How often a waiting side checks that the other process is still there."""
COMPILE_WAIT_S = 600.0
"""How long a run that ended normally waits for its background compile (a cold one took over 95 s on an H200
beside the editing child, longer than a default bear edit on two GPUs)."""

EditorBuilder = Callable[[Any, Any], Any]
"""Builds the editor from the editor's options (`EditorOptions`, or a pipeline config) and a device; a module-level
function (it is pickled by name)."""

_COMPILING, _COMPILED = 0, 1


class EditProcessError(RuntimeError):
    """The edit process stopped or could not start its editor."""


def default_builder() -> EditorBuilder:
    from igs2gs.fast_edits import build_ip2p_editor

    return build_ip2p_editor


def uncompiled(config: Any) -> Any:
    """A copy of the editor's options (or pipeline config) with `ip2p_compile` off."""
    config = copy.copy(config)
    config.ip2p_compile = False
    return config


@dataclass
class _Child:
    """A child process and its two queues; `ready` once its "ready" message was read. `kept`: messages read from
    `results` while waiting with a timeout (`_edits_within`), not yet handled."""

    process: Any
    jobs: Any
    results: Any
    ready: bool = False
    kept: Deque[Any] = field(default_factory=collections.deque)


class EditProcess:
    """Edits batches of `EditJob`s in a child process: `process(jobs)` returns one image or None per job; `send` and
    `receive` let the next batch wait in the child while it edits one (`edit_worker.PipelinedEdits`)."""

    def __init__(
        self,
        config: Any,
        device: Any,
        compile_ahead: bool = False,
        builder: Optional[EditorBuilder] = None,
    ) -> None:
        """Start the editing child, which builds the editor at once. With `compile_ahead` (ip2p_compile on CUDA),
        it builds it uncompiled, and a second child builds the compiled editor, compiles it when `plan` gives the
        sizes, and takes over from the next batch once it is done."""
        self._context, self._started_how = start_context(str(device))  # forked where safe (process_start.py)
        self._builder = builder or default_builder()
        self._device = str(device)
        self._compile_status = compile_flag(self._context)
        self._lock = threading.Lock()  # the worker thread hands over to the compiled child; close() may run meanwhile
        self._child = self._start_child(uncompiled(config) if compile_ahead else config, "igs2gs-editor", status=None)
        self._compiler: Optional[_Child] = None
        if compile_ahead:
            self._compiler = self._start_child(config, "igs2gs-editor-compiled", status=self._compile_status)
        self._retired: List[_Child] = []  # the uncompiled child, once the compiled one took over
        self._sent: Deque[Tuple[_Child, Optional[BatchBuffers]]] = collections.deque()
        """The child and the shared buffers of each batch sent and not yet received, oldest first."""
        self._batches = SharedBatches()
        self._edited_uncompiled = 0
        self._closed = False
        atexit.register(self.close)

    def _start_child(self, config: Any, name: str, status: Optional[Any]) -> _Child:
        return start_child(
            self._context, self._builder, config, self._device, name, status, self._started_how, one_thread=True
        )

    def plan(self, warm_up_sizes: Sequence[Tuple[int, int]], batch_size: int, settings: EditSettings) -> None:
        """The round's edit sizes and batch size, once the training images are known: each child warms its editor
        up with them (editor_warm_up.py); the compiling child compiles there."""
        plan = (list(warm_up_sizes), batch_size, settings)
        self._child.jobs.put(("plan", plan))
        if self._compiler is not None:
            self._compiler.jobs.put(("plan", plan))

    @property
    def compiled(self) -> bool:
        """Whether the compiling child has compiled the editor (it edits from the next batch on)."""
        return is_compiled(self._compile_status)

    @property
    def _takes_over_next(self) -> bool:
        """Whether the compiling child is compiled but does not edit yet: it takes the next batch sent."""
        return self._compiler is not None and self.compiled

    @property
    def alive(self) -> bool:
        return self._child.process.is_alive()

    def __call__(self, jobs: List[EditJob]) -> List[Optional[torch.Tensor]]:
        """Edit `jobs` (their renders must be ready) in the child; waits for the editor on the first call."""
        self.send(jobs)
        return self.receive()

    def send(self, jobs: List[EditJob]) -> None:
        """Queue `jobs` (their renders must be ready): the child edits them after the batches sent before."""
        if self._takes_over_next:
            self._hand_over()
        if self._closed:
            raise EditProcessError("the edit process was closed")
        packed, buffers = self._batches.pack(jobs)
        self._child.jobs.put(("edit", (packed, None if buffers is None else buffers.edits)))
        self._sent.append((self._child, buffers))
        if self._compiler is not None:
            self._edited_uncompiled += len(jobs)

    def can_send(self, in_flight: int) -> bool:
        """Whether a batch sent now would wait behind fewer than `in_flight` batches of the child that edits it: the
        compiled child's own batches once it is ready to take over, whatever the uncompiled one still edits. While
        the compile runs, the uncompiled child is sent one batch at a time, so the compiled child gets the next batch
        as soon as it is ready instead of a batch queued behind an uncompiled one (`edit_worker.PolledEdits`)."""
        if self._takes_over_next:
            target, limit = self._compiler, in_flight
        else:
            compiling = self._compiler is not None and self._compiler.process.is_alive()
            target, limit = self._child, 1 if compiling else in_flight
        return sum(child is target for child, _ in self._sent) < limit

    def receive(self, timeout: Optional[float] = None) -> Optional[List[Optional[torch.Tensor]]]:
        """The edits of the oldest batch sent and not yet received; waits for the editor on the first call. With
        `timeout`, None when they have not come within it (the batch stays the oldest)."""
        if not self._sent:
            raise EditProcessError("receive() without a batch sent")
        if timeout is not None and not _edits_within(self._sent[0][0], timeout):
            return None
        child, buffers = self._sent.popleft()
        try:
            if not child.ready:
                _receive(child)  # its "ready", or its start-up error
                child.ready = True
            return self._batches.unpack(_receive(child), buffers)
        except BaseException:
            self._batches.release(buffers)
            raise
        finally:
            if child is not self._child:
                self._stop_once_received(child)

    def _hand_over(self) -> None:
        """From now on the compiled child edits; the uncompiled one stops after its batches still in flight."""
        from nerfstudio.utils.rich_utils import CONSOLE

        with self._lock:
            if self._closed or self._compiler is None:
                return
            self._stop_once_received(self._child)
            self._retired.append(self._child)
            self._child, self._compiler = self._compiler, None
        CONSOLE.log(
            f"igs2gs: the compiled InstructPix2Pix takes over ({self._edited_uncompiled} views were edited uncompiled)"
        )

    def _stop_once_received(self, child: _Child) -> None:
        """Tell a retired child to stop if none of its batches is still in flight (not before: its edits come back
        as shared memory that it hands over while alive)."""
        if all(sent is not child for sent, _ in self._sent):
            child.jobs.put(STOP)

    def close(self, timeout: float = 30.0, finish_compile: bool = False) -> None:
        """`stop`, then `join`: the children are gone when it returns. Safe to call twice."""
        self.stop(finish_compile)
        self.join(timeout)

    def stop(self, finish_compile: bool = False) -> None:
        """Tell the children to stop after the batch in progress, without waiting for them to exit (`join` does):
        a child's exit (its CUDA context, its finalizers; `_leave` skips the interpreter's teardown) takes time
        that the training process can spend saving its last checkpoint. A compiling child still at work is stopped
        by `join`, unless `finish_compile` (training ended normally): then it may finish first, for up to
        `COMPILE_WAIT_S`, so that later runs find the compiled editor in the cache; Ctrl-C skips that. Safe to call
        twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for child in [self._child, *self._retired]:
            _ask_to_stop(child.process, child.jobs)
        if self._compiler is None:
            return
        process = self._compiler.process
        if finish_compile and process.is_alive() and not self.compiled:
            await_compile(process, lambda: self.compiled)
        if self.compiled:  # a child still compiling reads no queue: `join` terminates it
            _ask_to_stop(process, self._compiler.jobs)

    def join(self, timeout: float = 30.0) -> None:
        """Wait for the children told to stop (`stop`) to exit; terminate those still running after `timeout`
        (a compiling child at once). Safe to call twice, and before `stop` (it stops them first)."""
        self.stop()
        for child in [self._child, *self._retired]:
            reap(child.process, timeout, timeout)
        if self._compiler is not None:
            reap(self._compiler.process, timeout if self.compiled else 0.0, timeout)


def start_child(
    context: Any,
    builder: EditorBuilder,
    config: Any,
    device: str,
    name: str,
    status: Optional[Any],
    started_how: str,
    one_thread: bool = False,
) -> _Child:
    """Start a child (forked or spawned, as `context` does) that builds the editor and serves its queues (`_serve`);
    with `status`, the compiling kind. `started_how` goes into its log line; with `one_thread`, the child runs torch's
    CPU operators on one thread once its editor is built (process_start.ONE_THREAD)."""
    jobs, results = context.Queue(), context.Queue()
    forks = is_fork(context)
    process = context.Process(
        target=forked_target(_serve_then_leave) if forks else _serve_then_leave,
        args=(builder, config, device, jobs, results, os.getpid(), status, started_how, one_thread),
        name=name,
        daemon=True,
    )
    with contextlib.nullcontext() if forks else _parent_main_hidden(builder):
        process.start()
    return _Child(process, jobs, results)


def compile_flag(context: Any) -> Any:
    """A shared flag for a compiling child (`start_child`), read by `is_compiled`."""
    return context.Value("i", _COMPILING)


def is_compiled(status: Any) -> bool:
    """Whether the compiling child of this flag has compiled its editor."""
    return status.value == _COMPILED


def await_compile(process: Any, compiled: Callable[[], bool]) -> None:
    """Wait for a compiling child to finish its compile, at the end of a run that ended normally; Ctrl-C or
    `COMPILE_WAIT_S` end the wait."""
    from nerfstudio.utils.rich_utils import CONSOLE

    CONSOLE.log(
        "igs2gs: training is done; the background compile of InstructPix2Pix finishes for later runs "
        f"(at most {COMPILE_WAIT_S:.0f} s; Ctrl-C skips it, and the next run compiles again)"
    )
    deadline = time.monotonic() + COMPILE_WAIT_S
    try:
        while process.is_alive() and not compiled() and time.monotonic() < deadline:
            process.join(_POLL_S)
    except KeyboardInterrupt:
        CONSOLE.log("igs2gs: background compile skipped")


def _edits_within(child: _Child, timeout: float) -> bool:
    """Whether the child's next edits (after its "ready", the first time) came within `timeout`, or the child is
    gone; what was read is kept for `_receive`."""
    deadline = time.monotonic() + timeout
    while len(child.kept) < (1 if child.ready else 2):
        try:
            child.kept.append(child.results.get(timeout=max(0.0, deadline - time.monotonic())))
        except queue.Empty:
            return not child.process.is_alive()  # a child that is gone: `_receive` says so
    return True


def _receive(child: _Child) -> Any:
    """The child's next message; raises the error it sent, or EditProcessError when it is gone."""
    while True:
        try:
            ok, value, trace = child.kept.popleft() if child.kept else child.results.get(timeout=_POLL_S)
        except queue.Empty:
            if not child.process.is_alive():
                raise EditProcessError(
                    f"the InstructPix2Pix process stopped (exit code {child.process.exitcode}); see its output above "
                    "for why"
                ) from None
            continue
        if ok:
            return value
        value.add_note(f"raised in the InstructPix2Pix process:\n{trace}")
        raise value


def _ask_to_stop(process: Any, jobs: Any) -> None:
    """Ask a child to stop through its `jobs` queue."""
    if process.is_alive():
        jobs.put(STOP)


def reap(process: Any, wait: float, timeout: float) -> None:
    """Wait up to `wait` for a child to exit; terminate it otherwise (and wait up to `timeout` for that)."""
    process.join(wait)
    if process.is_alive():
        process.terminate()
        process.join(timeout)


@contextlib.contextmanager
def _parent_main_hidden(*functions: Optional[Callable[..., Any]]) -> Iterator[None]:
    """While a child is spawned: hide the main module's file and spec, so that the child does not run the parent's
    main script (multiprocessing's spawn re-runs it as `__mp_main__` to find functions defined there). Kept when one
    of `functions` (the child's builder) lives in the main module: the child needs it then."""
    main = sys.modules.get("__main__")
    if main is None or any(getattr(fn, "__module__", None) == "__main__" for fn in functions):
        yield
        return
    hidden = {name: main.__dict__[name] for name in ("__file__", "__spec__") if name in main.__dict__}
    main.__dict__.pop("__file__", None)
    if "__spec__" in hidden:
        main.__spec__ = None  # spawn reads main.__spec__.name first: a module run with -m is re-imported by name
    try:
        yield
    finally:
        main.__dict__.update(hidden)


def _picklable(error: BaseException) -> BaseException:
    """`error` if it can travel between processes, else a RuntimeError with its type and message."""
    import pickle

    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:  # noqa: BLE001 (any pickling failure)
        return RuntimeError(f"{type(error).__name__}: {error}")


def _serve_then_leave(*args: Any) -> None:
    """A child's whole life: `_serve`, then `_leave`."""
    _serve(*args)
    _leave()


def _leave() -> None:
    """End a child that is done: multiprocessing's own end of a child (its finalizers, among them the queues' last
    writes), then the process's exit without the interpreter's teardown. That teardown (freeing the modules of torch,
    diffusers and transformers, and their exit handlers, which only log, close idle sessions or stop idle compile
    workers) took 1.7-2.0 s of a 2.0 s exit on a 2-core CPU, and the trainer waits for it at the run's end
    (`EditProcess.join`); 0.08 s without it."""
    from multiprocessing import util

    finish = getattr(util, "_exit_function", None)  # what multiprocessing runs after the target returns
    if finish is None:  # pragma: no cover - a Python without it: the usual exit
        return
    finish()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _serve(
    builder: EditorBuilder,
    config: Any,
    device: str,
    jobs: Any,
    results: Any,
    parent: int,
    compile_status: Optional[Any],
    started_how: str,
    one_thread: bool,
) -> None:
    """A child: build the editor, then edit each batch of jobs until told to stop. The compiling child (one given
    `compile_status`) first compiles the editor in its warm-up edits, then sets the status and says it is ready;
    if that fails, it says so in its output and stops, and the run stays uncompiled."""
    from nerfstudio.utils.rich_utils import CONSOLE

    from igs2gs.edit_guard import EditGuard
    from igs2gs.fast_edits import edit_job_batch

    started = time.perf_counter()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the training process's to handle
    _use_device(device)
    compiling = compile_status is not None
    if compiling:
        CONSOLE.log("igs2gs: compiling InstructPix2Pix in the background; edits run uncompiled until it is done")
    phases = ""
    try:
        editor = builder(config, device)
        if one_thread:
            torch.set_num_threads(ONE_THREAD)  # compiles and edits as a forked child does (process_start.py)
        if compiling:
            built = time.perf_counter()
            plan = _next_plan(jobs, parent)
            if plan is None:
                return
            planned = time.perf_counter()
            _warm_up(editor, plan, device)
            phases = (
                f" (building {built - started:.1f} s, waiting for the image sizes {planned - built:.1f} s, "
                f"warm-up edits {time.perf_counter() - planned:.1f} s)"
            )
    except BaseException as error:  # noqa: BLE001 (sent to the training process, which decides)
        if compiling:
            CONSOLE.log(
                f"igs2gs: compiling InstructPix2Pix failed; this run edits uncompiled:\n{traceback.format_exc()}"
            )
            return
        results.put((False, _picklable(error), traceback.format_exc()))
        return
    what = "compiled" if compiling else "loaded"
    CONSOLE.log(
        f"igs2gs: InstructPix2Pix {what} in the edit process ({started_how}) in {time.perf_counter() - started:.1f} s"
        f"{phases}"
    )
    if compiling:
        compile_status.value = _COMPILED
    results.put((True, "ready", ""))
    guard, times, clock = EditGuard(), _BatchTimes(), _LaunchClock(editor)
    while True:
        waited = time.perf_counter()
        kind, message = _next_message(jobs, parent)
        if kind == "stop":
            if times.batches:
                CONSOLE.log(times.summary("compiled" if compiling else "uncompiled"))
            return
        try:
            if kind == "plan":
                _warm_up(editor, message, device)
                continue
            sent, edits = message
            received = time.perf_counter()
            batch = [moved(job, device) for job in sent]
            moved_at = time.perf_counter()
            with torch.no_grad():
                edited = edit_job_batch(lambda: clock, guard, batch, config.edit_max_side)
            out = edits_into(edited, edits)  # waits for the edit: the copies back need its images
            times.add(
                len(sent),
                received - waited,
                moved_at - received,
                clock.returned - moved_at,
                time.perf_counter() - moved_at,
            )
            results.put((True, out, ""))
        except BaseException as error:  # noqa: BLE001
            results.put((False, _picklable(error), traceback.format_exc()))


@dataclass
class _BatchTimes:
    """Where an editing child's time went between its first and last batch, for a line at its end."""

    batches: int = 0
    views: int = 0
    waiting: float = 0.0
    """For the next batch, from the end of the last one (the first batch's wait is the run's start, not counted)."""
    receiving: float = 0.0
    """Moving the batch's images to the editor's device."""
    launching: float = 0.0
    """Until the editor's call returned: on a GPU, its kernels are launched then, not yet done."""
    editing: float = 0.0
    """Editing the batch and copying its edits back."""

    def add(self, views: int, waiting: float, receiving: float, launching: float, editing: float) -> None:
        self.waiting += waiting if self.batches else 0.0
        self.batches += 1
        self.views += views
        self.receiving += receiving
        self.launching += launching
        self.editing += editing

    def summary(self, what: str) -> str:
        per_view = 1000 / self.views
        return (
            f"igs2gs: the {what} InstructPix2Pix edited {self.views} views in {self.batches} batches: per view "
            f"{self.editing * per_view:.1f} ms editing ({self.launching * per_view:.1f} ms of it until the editor's "
            f"call returned), {self.receiving * per_view:.1f} ms receiving, "
            f"{self.waiting * per_view:.1f} ms waiting for the next batch"
        )


class _LaunchClock:
    """The child's editor, noting when its last `edit` call returned. On a GPU the call returns once its last kernels
    are queued, and the edit guard's check then waits for them. A child whose GPU sets the pace returns about a launch
    queue's worth of work before the end (about one denoising step, 2 x H200); one whose processor does, within a
    kernel of it."""

    def __init__(self, editor: Any) -> None:
        self.returned = 0.0

        @functools.wraps(editor.edit)  # keeps edit's signature (`accepts_view_ids`)
        def edit(*args: Any, **kwargs: Any) -> Any:
            try:
                return editor.edit(*args, **kwargs)
            finally:
                self.returned = time.perf_counter()

        self.edit = edit


def _next_message(jobs: Any, parent: int) -> Tuple[str, Any]:
    """The next message for a child; ("stop", None) when the training process is gone."""
    while True:
        try:
            return jobs.get(timeout=_POLL_S)
        except queue.Empty:
            if os.getppid() != parent:
                return STOP


def _next_plan(jobs: Any, parent: int) -> Optional[Any]:
    """The compiling child's plan; None when it is told to stop first."""
    kind, message = _next_message(jobs, parent)
    return message if kind == "plan" else None


def _use_device(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.set_device(torch.device(device))


def _warm_up(editor: Any, plan: Tuple[List[Tuple[int, int]], int, EditSettings], device: str) -> None:
    """Warm the editor up for the plan's sizes (editor_warm_up.py): a compiling editor compiles there; an eager one
    on a GPU loads its kernels while the training process is still starting, instead of in the first batch."""
    from igs2gs.editor_warm_up import builds_editor_ahead, warm_up_editor

    sizes, batch_size, settings = plan
    warm_up_editor(editor, sizes, batch_size, settings, device, eager=builds_editor_ahead(device))
