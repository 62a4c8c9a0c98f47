"""Compile InstructPix2Pix for later runs in a child process, while a one-GPU run edits uncompiled.

A one-GPU run with `--pipeline.ip2p-compile` whose compiled pieces no earlier run saved (saved_compile.py) used to
compile in the training process, in the editor's warm-up edits at start-up: training started 100-135 s late and the
run took 171-205 s, against 105-113 s for the default (H200, benchmarks/RESULTS.md). Now such a run edits with the
default, uncompiled editor, and a child process on the same GPU builds the compiled editor, compiles it in its warm-up
edits (edit_process.py's compiling child), saves the pieces and exits. Later runs load the pieces in their first edits
(editor_warm_up.py).

- The child runs at a lower CPU priority (`NICE`), so the pool of compile workers it starts leaves the processor to
  the training process's threads first; its GPU work (the warm-up edits) is a few seconds.
- A run that ends before the compile is done lets it finish, for at most `edit_process.COMPILE_WAIT_S` (Ctrl-C skips
  that); a run that stops otherwise stops it, and the next run compiles again.
- The child holds its own copy of InstructPix2Pix on the GPU while it compiles: a run whose GPU has less than
  `CHILD_GPU_GIB` free compiles in the training process at start-up, as before.
"""

from __future__ import annotations

import atexit
import os
import threading
from typing import Any, Optional, Sequence, Tuple

import torch
import torch.multiprocessing as mp

from igs2gs.edit_process import (
    STOP,
    EditorBuilder,
    await_compile,
    compile_flag,
    default_builder,
    is_compiled,
    reap,
    start_child,
    uncompiled,
)
from igs2gs.editor import EditSettings
from igs2gs.fast_edits import configure_editor

CHILD_GPU_GIB = 6.0
"""Free GPU memory a run needs before it compiles in a child: the child's InstructPix2Pix and compile took 4.5 GB
beside a 512 px run on an H200 (10.8 against 6.3 GB in use on the card, benchmarks/RESULTS.md), and the training
process still grows after its start-up."""

NICE = 10
"""How much lower the child's CPU priority is than the training process's (Unix niceness, inherited by the
compile workers it starts)."""


class BackgroundCompile:
    """A child that compiles the editor for `plan`'s sizes, saves the compiled pieces and exits; it edits nothing."""

    def __init__(self, config: Any, device: Any, builder: Optional[EditorBuilder] = None) -> None:
        """Start the child; it builds the compiled editor at once and compiles once `plan` gives the sizes.
        `config`: the editor's options (editor_options.py) with `ip2p_compile` on."""
        context = mp.get_context("spawn")  # CUDA cannot be used in a forked child
        self._status = compile_flag(context)
        self._child = start_child(
            context,
            builder or default_builder(),
            config,
            str(device),
            "igs2gs-editor-compile",
            self._status,
            started_how="spawned",
        )
        _lower_priority(self._child.process.pid)
        self._lock = threading.Lock()
        self._closed = False
        atexit.register(self.close)

    def plan(self, warm_up_sizes: Sequence[Tuple[int, int]], batch_size: int, settings: EditSettings) -> None:
        """The round's edit sizes and batch size: the child compiles for them, then exits (it is told to stop
        now, and reads that once compiled)."""
        self._child.jobs.put(("plan", (list(warm_up_sizes), batch_size, settings)))
        self._child.jobs.put(STOP)

    @property
    def compiled(self) -> bool:
        """Whether the child has compiled (and saved) the editor."""
        return is_compiled(self._status)

    @property
    def alive(self) -> bool:
        return self._child.process.is_alive()

    def stop(self, finish_compile: bool = False) -> None:
        """With `finish_compile` (training ended normally), wait for a compile in progress, for at most
        `COMPILE_WAIT_S` (Ctrl-C skips it). Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if finish_compile and self.alive and not self.compiled:
            await_compile(self._child.process, lambda: self.compiled)

    def join(self, timeout: float = 30.0) -> None:
        """Wait for a compiled child to exit; terminate one still compiling at once (after `stop`, unless that
        waited for it). Safe to call twice."""
        self.stop()
        reap(self._child.process, timeout if self.compiled else 0.0, timeout)

    def close(self, finish_compile: bool = False) -> None:
        """`stop`, then `join`."""
        self.stop(finish_compile)
        self.join()


def _lower_priority(pid: Optional[int]) -> None:
    """Raise the niceness of process `pid` by `NICE` where the system allows it (Unix)."""
    if pid is None or not hasattr(os, "setpriority"):  # pragma: no cover - not Unix
        return
    try:
        os.setpriority(os.PRIO_PROCESS, pid, os.getpriority(os.PRIO_PROCESS, pid) + NICE)
    except OSError:  # pragma: no cover - not permitted here: the same priority as training
        pass


def compiles_aside(editor: Any, sizes: Sequence[Tuple[int, int]], batch_size: int) -> bool:
    """Whether a run leaves its editor's compile to a `BackgroundCompile`: the editor compiles, keeps its pieces whole
    for later runs (`InstructPix2PixEditor.keeps_compiled_pieces`), no earlier run saved them for this plan, and its
    GPU has room for the child (`room_for_child`; else it compiles in the training process, as before)."""
    return (
        getattr(editor, "compiling", False)
        and getattr(editor, "keeps_compiled_pieces", False)
        and not editor.saved_plan_ready(sizes, batch_size)
        and room_for_child(getattr(editor, "device", "cpu"))
    )


def room_for_child(device: Any) -> bool:
    """Whether a CUDA device has `CHILD_GPU_GIB` free for the child (always on other devices); says so when not."""
    device = torch.device(device)
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    if free >= CHILD_GPU_GIB * 2**30:
        return True
    from nerfstudio.utils.rich_utils import CONSOLE

    CONSOLE.log(
        f"igs2gs: {free / 2**30:.1f} GiB free on {device}, under the {CHILD_GPU_GIB:.0f} GiB a background compile of "
        "InstructPix2Pix needs: it compiles in this process at start-up instead"
    )
    return False


def run_uncompiled(editor: Any, config: Any) -> None:
    """Set an editor that `fast_edits.configure_editor` set up to compile back to the configuration it has without
    `ip2p_compile` (the run's edits while its compile happens aside)."""
    editor.disable_compile()
    editor.pad_views_to = 0
    configure_editor(editor, uncompiled(config))
