"""Build the 2D editor while the trainer starts up.

Loading InstructPix2Pix (about 2 GB of weights onto the GPU) and its first edit (where cuDNN and cuBLAS
pick their kernels, and `--pipeline.ip2p-compile` compiles) used to happen at the first edit of the first
round, on the editing critical path. `EditorPreload` does both on a thread of its own while nerfstudio loads
the checkpoint and sets up the trainer; the first use of the editor waits for that thread and gets its
editor, or the error that stopped the build. A failed warm-up edit only costs the warm-up: the editor is
still handed out, and the real edits meet the same problem under the edit guard.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Optional, Sequence, Tuple

import torch
from nerfstudio.utils.rich_utils import CONSOLE

from igs2gs.editor import EditSettings, ImageEditor


def preloads_editor(editor_device: Any) -> bool:
    """Whether a training run builds its editor ahead: on CUDA devices. On the CPU there is no GPU work to
    overlap, and the editor is built at the first edit."""
    return torch.device(editor_device).type == "cuda"


class EditorPreload:
    """Runs `build` (and then `warm_up` on its editor) on a daemon thread, started at construction."""

    def __init__(
        self, build: Callable[[], ImageEditor], warm_up: Optional[Callable[[ImageEditor], None]] = None
    ) -> None:
        self._build = build
        self._warm_up = warm_up
        self._done = threading.Event()
        self._editor: Optional[ImageEditor] = None
        self._error: Optional[BaseException] = None
        self.warm_up_error: Optional[BaseException] = None
        """Why the warm-up edit failed, if it did (the editor is handed out all the same)."""
        # A daemon thread: a run that stops during start-up does not wait for a load it no longer needs.
        self._thread = threading.Thread(target=self._run, name="igs2gs-editor-preload", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            editor = self._build()
        except BaseException as err:  # handed to the first user of the editor
            self._error = err
            self._done.set()
            return
        if self._warm_up is not None:
            try:
                self._warm_up(editor)
            except Exception as err:  # a speed-up only
                self.warm_up_error = err
                CONSOLE.log(f"igs2gs: the editor's warm-up edit failed ({type(err).__name__}: {err}); going on")
        self._editor = editor
        self._done.set()

    @property
    def done(self) -> bool:
        """Whether the build (and warm-up) has finished, successfully or not."""
        return self._done.is_set()

    def result(self, timeout: Optional[float] = None) -> ImageEditor:
        """The editor, once built; re-raises the build's error. Raises TimeoutError after `timeout` seconds."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"the editor was not built within {timeout} s")
        if self._error is not None:
            raise self._error
        assert self._editor is not None
        return self._editor


def warm_up_edit(
    editor: ImageEditor, size: Tuple[int, int], batch_size: int, settings: EditSettings, device: Any
) -> None:
    """One edit of `batch_size` grey images of `size` (height, width) at `device`, as a round's edits call the
    editor: the kernels it picks or compiles are then ready when the first round starts."""
    images = torch.full((batch_size, 3, *size), 0.5, device=device)
    generators: Sequence[torch.Generator] = [torch.Generator("cpu").manual_seed(i) for i in range(batch_size)]
    with torch.no_grad():
        editor.edit(images, images, settings, generator=list(generators) if batch_size > 1 else generators[0])
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
