"""How the edit processes start: forked from the training process where that is safe, spawned otherwise.

A spawned child is a fresh interpreter that imports torch before its first line: 2.5-3 s on the lent 2 x H200
machines (py-spy, benchmarks/RESULTS.md, "Thirtieth session"), in every run, before InstructPix2Pix can start to
load. A forked child starts with the training process's modules already imported. Forking is safe only while the
training process is still plain:

- CUDA is uninitialised, in torch and in the driver: a forked child cannot use a CUDA context made before the fork.
  igs2gs starts its edit processes first thing when the pipeline is built, and its checks before that count GPUs
  through NVML (`torch.cuda.device_count()`), which does not initialise the driver.
- No thread runs but the calling one: a fork copies only that thread, and a lock another thread held stays held in
  the child forever.
- Linux (fork is POSIX's; on macOS system libraries may not survive it).

A forked child runs torch's CPU operators on one thread: GNU OpenMP's thread pool, once the parent has used it, hangs
in a forked child (pytorch/pytorch#41197). The editors' CPU work there is small: their GPU does the editing.

`IGS2GS_START_METHOD=spawn` always spawns (to compare, or to rule forking out); `fork` forks whenever the conditions
above hold, also for editors on the CPU (tests); the default, `auto`, forks only for CUDA editors, where it pays.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
import threading
from typing import Any, Callable, List, Optional, Tuple

import torch

ONE_THREAD = 1
"""CPU threads of every edit process's child once its editor is built, forked or spawned. A forked child needs one
(above); a spawned one follows it, because the number of threads is part of dynamo's global state, which keys the
saved compiled pieces (`saved_compile.global_state`): with the core count in spawned children, a spawned run found no
pieces a forked run had saved, and compiled again (22-24 s of warm-up instead of 3-4.5 s, benchmarks/RESULTS.md,
"Thirty-first session of issue 6"). A spawned child builds its editor first, on all its threads."""

START_METHOD_VARIABLE = "IGS2GS_START_METHOD"
START_METHODS = ("auto", "fork", "spawn")
_CUDA_ERROR_NOT_INITIALIZED = 3


def cuda_driver_initialised() -> bool:
    """Whether this process has initialised the CUDA driver (`cuInit`); False without a driver library. Before
    `cuInit` every driver call answers CUDA_ERROR_NOT_INITIALIZED."""
    try:
        driver = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return driver.cuCtxGetCurrent(ctypes.byref(ctypes.c_void_p())) != _CUDA_ERROR_NOT_INITIALIZED


def fork_refusal(device: str) -> Optional[str]:
    """Why a child editing on `device` must be spawned now, or None when it may be forked."""
    choice = os.environ.get(START_METHOD_VARIABLE, "auto").strip().lower() or "auto"
    if choice not in START_METHODS:
        raise ValueError(f"{START_METHOD_VARIABLE}={choice!r}: use one of {', '.join(START_METHODS)}")
    if choice == "spawn":
        return f"{START_METHOD_VARIABLE}=spawn"
    if not sys.platform.startswith("linux"):
        return f"forks only on Linux, not {sys.platform}"
    if choice == "auto" and torch.device(device).type != "cuda":
        return f"forks only for CUDA editors (this one is on {device})"
    if torch.cuda.is_initialized() or cuda_driver_initialised():
        return "CUDA is already initialised in the training process"
    others = other_threads()
    if others:
        return f"other threads run in the training process ({', '.join(others)})"
    return None


def other_threads() -> List[str]:
    """The names of this process's Python threads other than the calling one."""
    return [thread.name for thread in threading.enumerate() if thread is not threading.current_thread()]


def start_context(device: str) -> Tuple[Any, str]:
    """The multiprocessing context to start a child editing on `device` with, and how it starts, for the logs
    ("forked", or "spawned" and why)."""
    import torch.multiprocessing as mp

    refusal = fork_refusal(device)
    if refusal is None:
        return mp.get_context("fork"), "forked"
    return mp.get_context("spawn"), f"spawned: {refusal}"


def forked_target(target: Callable[..., Any]) -> Callable[..., Any]:
    """`target`, run in a forked child after that child's set-up: torch's CPU operators on one thread."""

    @functools.wraps(target)
    def run(*args: Any) -> Any:
        torch.set_num_threads(ONE_THREAD)
        return target(*args)

    return run


def is_fork(context: Any) -> bool:
    """Whether `context` (a multiprocessing context) forks."""
    return context.get_start_method() == "fork"
