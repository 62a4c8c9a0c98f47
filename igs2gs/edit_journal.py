"""Every edit on disk as it is made, so a run stopped between checkpoints loses none.

nerfstudio saves checkpoints every `--steps-per-save` steps and not on Ctrl-C; a killed run would
lose the edits since the last one. The journal keeps, inside the run folder:

    edits/view_00012.png   the latest edit of training view 12 (lossless 8-bit RGB, as the cache keeps it)
    edits/state.json       the round (number, cursor, start step), the step of each view's latest edit,
                           the step the round last moved at and a hash of the edit settings

Each file is written to a temporary name and renamed over the old one (atomic on POSIX and
Windows), and the state is written after the image, so a run killed at any moment leaves a
journal whose state never claims an image that is not there yet.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, Optional

import numpy as np
import torch
from PIL import Image

JOURNAL_FORMAT = 1
STATE_FILE = "state.json"


@dataclass
class JournalState:
    """The round and the edits in the journal."""

    rounds_started: int = 0
    """Rounds begun so far (the current round's number)."""
    active: bool = False
    """True while the current round still has views to edit."""
    cursor: int = 0
    """The next view the round edits."""
    round_start_step: int = -1
    """Step at which the current round began."""
    last_step: int = -1
    """Step at which the round last went past a view (edited or skipped); -1: never."""
    num_views: int = 0
    """Training views of the scene."""
    settings_hash: str = ""
    """`run_state.settings_hash` of the settings of the latest edit."""
    view_steps: Dict[int, int] = field(default_factory=dict)
    """Step of the latest edit of each view in the journal."""


class EditJournal:
    """The `edits/` folder of one run."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def image_path(self, idx: int) -> Path:
        """Where the latest edit of view `idx` is kept."""
        return self.folder / f"view_{idx:05d}.png"

    def write_edit(self, idx: int, image: torch.Tensor) -> None:  # image: [H, W, 3] uint8
        """Keep the edit of view `idx` (replacing the previous one) as a lossless PNG."""
        assert image.dtype == torch.uint8 and image.ndim == 3 and image.shape[-1] == 3, (image.dtype, image.shape)
        pixels = image.detach().cpu().numpy()
        # compress_level 1: a few ms per 512 px view, about the size of level 6 for photos
        write_atomically(self.image_path(idx), lambda path: Image.fromarray(pixels).save(path, "PNG", compress_level=1))

    def write_state(self, state: JournalState) -> None:
        """Replace the journal's state (after the images it names are written)."""
        data = {"format": JOURNAL_FORMAT, **asdict(state)}
        data["view_steps"] = {str(view): step for view, step in sorted(state.view_steps.items())}
        text = json.dumps(data, indent=1) + "\n"
        write_atomically(self.folder / STATE_FILE, lambda path: path.write_text(text))

    def read_state(self) -> Optional[JournalState]:
        """The journal's state; None when there is none or it cannot be read (a journal of another format)."""
        try:
            data = json.loads((self.folder / STATE_FILE).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("format") != JOURNAL_FORMAT:
            return None
        try:
            known = {name: data[name] for name in JournalState.__dataclass_fields__ if name in data}
            known["view_steps"] = {int(view): int(step) for view, step in known.get("view_steps", {}).items()}
            return JournalState(**known)
        except (TypeError, ValueError):
            return None

    def read_edit(self, idx: int) -> Optional[torch.Tensor]:  # [H, W, 3] uint8
        """The kept edit of view `idx`; None when it is missing or unreadable."""
        try:
            with Image.open(self.image_path(idx)) as image:
                pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
        except (OSError, ValueError):
            return None
        return torch.from_numpy(pixels.copy())


def write_atomically(path: Path, write: Callable[[Path], None], temporary_folder: Optional[Path] = None) -> None:
    """Write `path` through a temporary file and rename it into place. The temporary file is in `path`'s folder, or
    in `temporary_folder` (on the same file system) where a stray file in that folder would be read as one of its
    own, as nerfstudio does with every file in a checkpoint folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = (temporary_folder or path.parent) / f".{path.name}.{os.getpid()}.tmp"
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()
