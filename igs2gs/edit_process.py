"""InstructPix2Pix in a process of its own, for runs that edit on a GPU of its own (`--pipeline.ip2p-process`).

With the editor on a second GPU, the edit worker (`edit_worker.py`) is a thread of the training process, and
both launch their CUDA kernels from Python, taking turns at the GIL. On 2 x H200 (benchmarks/RESULTS.md)
training steps averaged 8.8-9.0 ms in such runs against 5.0 ms for a plain step alone, whether the editor was
eager or compiled. Here the worker thread only forwards each batch of jobs to a child process and waits for the
edits (a blocking queue read, which releases the GIL).

- The child starts when the pipeline starts to be built, and loads the editor while the training process caches
  its images, loads the checkpoint and starts the viewer: loading in another process cannot meet the training
  process's threads (see editor_warm_up.py for what loading and compiling change process-wide).
- With `--pipeline.ip2p-compile`, edits never wait for a compile, only for a load from the cache. A run whose
  compiled editor the compile cache already holds (an earlier run left a mark there, compile_marks.py) loads it
  before its first edit (9.5-12.4 s on an H200). Otherwise the run edits uncompiled while a second child compiles
  the editor (70-100 s and more on an H200) for later runs; a run that ends normally waits for it to finish
  (Ctrl-C skips), since a default bear edit on two GPUs ends first. The editing child does not switch mid-run:
  on 2 x H200, a switch that loaded the compiled editor during round 2 of the default bear edit held edits back
  12.4 s, and that run took 127 s against 107-115 s uncompiled (benchmarks/RESULTS.md).
- The children start light: they get the editor's options (editor_options.py), not the pipeline config, and do
  not re-run the training process's main module, which multiprocessing's spawn does by default (for `ns-train`
  that imports every nerfstudio method). On a 2-core CPU a child was ready 1.0 s after its start instead of 4.9 s
  under an `ns-train`-like main (stand-in editor; InstructPix2Pix's own imports and loading come after).
- Jobs travel as CPU tensors through torch.multiprocessing queues (shared memory); edits come back the same
  way, one [1, 3, h, w] image or None (discarded by the child's edit guard) per job.
- The child's errors come back with their traceback and are raised on the worker thread as the editor's
  own would be; a child that dies is reported with its exit code (`EditProcessError`). A compile that fails
  leaves the edits uncompiled (and says so).
- Ctrl-C reaches the training process only (the children ignore SIGINT); they stop when told, when the
  training process is gone, or with the training process's exit (daemon processes).
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import os
import queue
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.multiprocessing as mp

from igs2gs.compile_marks import compile_mark, leave_mark
from igs2gs.edit_worker import EditJob
from igs2gs.editor import EditSettings

_STOP = ("stop", None)
_POLL_S = 1.0
"""How often a waiting side checks that the other process is still there."""
COMPILE_WAIT_S = 600.0
"""How long a run that ended normally waits for its background compile (a cold one took over 95 s on an H200
beside the editing child, longer than a default bear edit on two GPUs)."""

EditorBuilder = Callable[[Any, Any], Any]
"""Builds the editor from the editor's options (`EditorOptions`, or a pipeline config) and a device; a module-level
function (it is pickled by name)."""
EditorConfigurer = Callable[[Any, Any], None]
"""Applies the options' editor switches to a built editor (`fast_edits.configure_editor`); module-level."""

_COMPILING, _COMPILED = 0, 1


class EditProcessError(RuntimeError):
    """The edit process stopped or could not start its editor."""


def _default_builder() -> EditorBuilder:
    from igs2gs.fast_edits import build_ip2p_editor

    return build_ip2p_editor


def _default_configurer() -> EditorConfigurer:
    from igs2gs.fast_edits import configure_editor

    return configure_editor


def uncompiled(config: Any) -> Any:
    """A copy of the editor's options (or pipeline config) with `ip2p_compile` off."""
    config = copy.copy(config)
    config.ip2p_compile = False
    return config


class EditProcess:
    """Edits batches of `EditJob`s in a child process: `process(jobs)` returns one image or None per job."""

    def __init__(
        self,
        config: Any,
        device: Any,
        compile_ahead: bool = False,
        builder: Optional[EditorBuilder] = None,
        configurer: Optional[EditorConfigurer] = None,
    ) -> None:
        """Start the child, which builds the editor at once. With `compile_ahead` (ip2p_compile on CUDA), it
        builds it uncompiled and `plan` starts the compiling child."""
        self._context = mp.get_context("spawn")  # CUDA cannot be used in a forked child
        self._jobs = self._context.Queue()
        self._results = self._context.Queue()
        self._compile_status = self._context.Value("i", _COMPILING)
        self._builder = builder or _default_builder()
        self._config, self._device, self._compile_ahead = config, str(device), compile_ahead
        args = (self._builder, config, self._device, compile_ahead, configurer or _default_configurer())
        self._process = self._context.Process(
            target=_serve,
            args=(*args, self._jobs, self._results, os.getpid()),
            name="igs2gs-editor",
            daemon=True,
        )
        with _parent_main_hidden(self._builder, configurer):
            self._process.start()
        self._compiler: Optional[Any] = None
        self._ready = False
        self._closed = False
        atexit.register(self.close)

    def plan(self, warm_up_sizes: Sequence[Tuple[int, int]], batch_size: int, settings: EditSettings) -> None:
        """The round's edit sizes and batch size, once the training images are known: the child warms a compiling
        editor up with them before its first edit (editor_warm_up.py). With `compile_ahead`, the compiling child
        starts here and compiles them, unless an earlier run left them in the compile cache: then the editing
        child compiles at once, from the cache."""
        plan = (list(warm_up_sizes), batch_size, settings)
        mark = compile_mark(self._config, self._device, warm_up_sizes, batch_size) if self._compile_ahead else None
        compile_now = mark is not None and mark.exists()  # an earlier run compiled this editor (compile_marks.py)
        if compile_now:
            self._compile_status.value = _COMPILED
        self._jobs.put(("plan", (plan, compile_now)))
        if self._compile_ahead and not compile_now and self._compiler is None:
            self._compiler = self._context.Process(
                target=_compile_ahead,
                args=(self._builder, self._config, self._device, plan, self._compile_status, mark),
                name="igs2gs-editor-compile",
                daemon=True,
            )
            with _parent_main_hidden(self._builder):
                self._compiler.start()

    @property
    def compiled(self) -> bool:
        """Whether the compile cache holds this editor: found marked at `plan`, or filled by the compiling child."""
        return self._compile_status.value == _COMPILED

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
        self._jobs.put(("edit", [_moved(job, "cpu") for job in jobs]))
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

    def close(self, timeout: float = 30.0, finish_compile: bool = False) -> None:
        """Stop the child after the batch in progress. A compiling child still at work stops too, unless
        `finish_compile` (training ended normally): then it may finish, for up to `COMPILE_WAIT_S`, so that later
        runs find the compiled editor in the cache; Ctrl-C skips that. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._process.is_alive():
            self._jobs.put(_STOP)
            self._process.join(timeout)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(timeout)
        if self._compiler is not None and self._compiler.is_alive() and finish_compile:
            self._await_compile()
        if self._compiler is not None and self._compiler.is_alive():
            self._compiler.terminate()
            self._compiler.join(timeout)

    def _await_compile(self) -> None:
        """Wait for the compiling child (it leaves its mark when done); Ctrl-C or `COMPILE_WAIT_S` end the wait."""
        from nerfstudio.utils.rich_utils import CONSOLE

        CONSOLE.log(
            "igs2gs: training is done; the background compile of InstructPix2Pix finishes for later runs "
            f"(at most {COMPILE_WAIT_S:.0f} s; Ctrl-C skips it, and the next run compiles again)"
        )
        try:
            self._compiler.join(COMPILE_WAIT_S)
        except KeyboardInterrupt:
            CONSOLE.log("igs2gs: background compile skipped")


@contextlib.contextmanager
def _parent_main_hidden(*functions: Optional[Callable[..., Any]]) -> Iterator[None]:
    """While a child is spawned: hide the main module's file and spec, so that the child does not run the parent's
    main script (multiprocessing's spawn re-runs it as `__mp_main__` to find functions defined there). Kept when one
    of `functions` (the child's builder and configurer) lives in the main module: the child needs it then."""
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
    compile_ahead: bool,
    configurer: EditorConfigurer,
    jobs: Any,
    results: Any,
    parent: int,
) -> None:
    """The editing child: build the editor, then edit each batch of jobs until told to stop; with a compile
    mark in the plan, compile first (from the cache)."""
    from nerfstudio.utils.rich_utils import CONSOLE

    from igs2gs.edit_guard import EditGuard
    from igs2gs.fast_edits import edit_job_batch

    started = time.perf_counter()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the training process's to handle
    _use_device(device)
    try:
        editor = builder(uncompiled(config) if compile_ahead else config, device)
    except BaseException as error:  # noqa: BLE001 (sent to the training process, which decides)
        results.put((False, _picklable(error), traceback.format_exc()))
        return
    CONSOLE.log(f"igs2gs: InstructPix2Pix loaded in the edit process in {time.perf_counter() - started:.1f} s")
    results.put((True, "ready", ""))
    guard = EditGuard()
    while True:
        try:
            kind, message = jobs.get(timeout=_POLL_S)
        except queue.Empty:
            if os.getppid() != parent:  # the training process is gone
                return
            continue
        if kind == "stop":
            return
        try:
            if kind == "plan":
                plan, compile_now = message
                _warm_up(editor, plan, device)
                if compile_now:
                    _switch_to_compiled(editor, config, configurer, plan, device)
                continue
            batch = [_moved(job, device) for job in message]
            with torch.no_grad():
                edited = edit_job_batch(lambda: editor, guard, batch, config.edit_max_side)
            images = [None if image is None else image.detach().float().cpu() for image in edited]
            results.put((True, images, ""))
        except BaseException as error:  # noqa: BLE001
            results.put((False, _picklable(error), traceback.format_exc()))


def _use_device(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.set_device(torch.device(device))


def _warm_up(editor: Any, plan: Tuple[List[Tuple[int, int]], int, EditSettings], device: str) -> None:
    from igs2gs.editor_warm_up import warm_up_editor

    sizes, batch_size, settings = plan
    warm_up_editor(editor, sizes, batch_size, settings, device)


def _switch_to_compiled(editor: Any, config: Any, configurer: EditorConfigurer, plan: Any, device: str) -> None:
    """Compile the editing child's editor from the cache an earlier run filled; stay uncompiled on failure."""
    from nerfstudio.utils.rich_utils import CONSOLE

    started = time.perf_counter()
    try:
        configurer(editor, config)
        _warm_up(editor, plan, device)
    except Exception:  # noqa: BLE001 (edits go on uncompiled)
        trace = traceback.format_exc()
        CONSOLE.log(f"igs2gs: compiled InstructPix2Pix failed to load; edits run uncompiled:\n{trace}")
        getattr(editor, "disable_compile", lambda: None)()
        configurer(editor, uncompiled(config))
        return
    CONSOLE.log(f"igs2gs: compiled InstructPix2Pix loaded from the cache in {time.perf_counter() - started:.1f} s")


def _compile_ahead(
    builder: EditorBuilder, config: Any, device: str, plan: Any, status: Any, mark: Optional[Path]
) -> None:
    """The compiling child: build the compiled editor and compile it in its warm-up edits, which fills the compile
    cache for later runs; then leave its mark (compile_marks.py), set `status` and exit."""
    from nerfstudio.utils.rich_utils import CONSOLE

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _use_device(device)
    started = time.perf_counter()
    CONSOLE.log("igs2gs: compiling InstructPix2Pix in the background for later runs; this one edits uncompiled")
    try:
        editor = builder(config, device)
        _warm_up(editor, plan, device)
    except Exception:  # noqa: BLE001 (edits go on uncompiled)
        CONSOLE.log(f"igs2gs: compiling InstructPix2Pix failed; later runs will try again:\n{traceback.format_exc()}")
        return
    leave_mark(mark)
    CONSOLE.log(f"igs2gs: InstructPix2Pix compiled in {time.perf_counter() - started:.1f} s")
    status.value = _COMPILED
