"""Checkpoints written on a thread of their own, so that training does not stop for the disk.

nerfstudio's `Trainer.save_checkpoint` pickles and writes the whole checkpoint on the training thread: the Gaussians,
their optimizer state and the 87 edited views of bear, 0.23-0.31 s per checkpoint on the lent H200 machines, nine
times in a default edit. Here the training thread only gathers the state and copies its tensors (on their own
device, queued like any other work, so that the next steps may change the originals). A writer thread waits for
those copies, and for whatever else must be on disk first (the edit journal's writes queued before the checkpoint),
writes the file under a temporary name beside the checkpoint folder and renames it into place, so that a crash never
leaves a truncated checkpoint where `--load-dir` or `ns-viewer` would read it. Only then are older checkpoints
deleted (`save_only_latest_checkpoint`).

One write is in flight at a time: the next `write` and `wait` wait for it and raise its error on the calling
thread. Each write has a thread of its own, not a daemon: the interpreter lets it finish before it exits.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, List, Optional, Set

import torch

from igs2gs.edit_journal import write_atomically


def copy_tensors(state: Any, devices: Optional[Set[torch.device]] = None) -> Any:
    """`state` (nested dicts, lists and tuples) with every tensor replaced by a copy of it on its device; anything
    else is kept as it is. The CUDA devices of the copies are added to `devices`."""
    if isinstance(state, torch.Tensor):
        if state.is_cuda and devices is not None:
            devices.add(state.device)
        return state.detach().clone()
    if isinstance(state, dict):
        copied = {key: copy_tensors(value, devices) for key, value in state.items()}
        if isinstance(state, OrderedDict):  # a module's state dict: its `_metadata` (versions) goes along
            copied = OrderedDict(copied)
            if hasattr(state, "_metadata"):
                copied._metadata = state._metadata  # type: ignore[attr-defined]
        return copied
    if isinstance(state, (list, tuple)) and not hasattr(state, "_fields"):
        return type(state)(copy_tensors(value, devices) for value in state)
    return state


class CheckpointWriter:
    """Writes checkpoints one at a time on a thread of its own (see the module docstring)."""

    def __init__(self) -> None:
        self._in_flight: Optional[threading.Thread] = None
        self._error: Optional[BaseException] = None

    def write(
        self,
        state: Any,
        path: Path,
        temporary_folder: Path,
        keep_only_latest: bool = False,
        before: Optional[Callable[[], None]] = None,
    ) -> None:
        """Copy `state`'s tensors now and write `state` to `path` on the writer thread, through a temporary file in
        `temporary_folder` (on the same file system, outside `path`'s folder: `write_atomically`). `before` runs on
        the writer thread first; with `keep_only_latest`, the other `*.ckpt` files of `path`'s folder are deleted
        afterwards. Waits for the previous write first and raises its error."""
        self.wait()
        devices: Set[torch.device] = set()
        snapshot = copy_tensors(state, devices)
        ready = []
        for device in devices:
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(device))
            ready.append(event)
        arguments = (snapshot, Path(path), Path(temporary_folder), keep_only_latest, before, ready)
        self._in_flight = threading.Thread(target=self._run, args=arguments, name="igs2gs-checkpoint")
        self._in_flight.start()

    def wait(self) -> None:
        """Wait for the write in flight, if any; raise its error."""
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is not None:
            in_flight.join()
        error, self._error = self._error, None
        if error is not None:
            raise error

    def _run(self, *arguments: Any) -> None:
        try:
            _write(*arguments)
        except BaseException as error:  # raised on the training thread by the next write or wait
            self._error = error


def _write(
    state: Any,
    path: Path,
    temporary_folder: Path,
    keep_only_latest: bool,
    before: Optional[Callable[[], None]],
    ready: List[torch.cuda.Event],
) -> None:
    for event in ready:
        event.synchronize()
    if before is not None:
        before()

    def save(temporary: Path) -> None:
        with open(temporary, "wb") as file:
            torch.save(state, file)
            file.flush()
            os.fsync(file.fileno())  # on disk before the rename makes it the checkpoint

    write_atomically(path, save, temporary_folder)
    if keep_only_latest:
        for older in path.parent.glob("*.ckpt"):
            if older != path:
                older.unlink(missing_ok=True)
