"""Probe: how long journalling an edit keeps the training thread, written there (as before) or on the writer thread.

Journals `--views` photos of a scene (uint8, on the GPU when there is one, as the cache holds them) once with
`EditJournal.write_edit` on the calling thread and once with `BackgroundJournal` (background_journal.py), and prints
the calling thread's milliseconds per view for each, and the background writer's total until its flush.

    python benchmarks/probe_journal.py --images ../shared/data/bear/images [--views 40]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from igs2gs.background_journal import BackgroundJournal  # noqa: E402
from igs2gs.edit_journal import EditJournal  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--views", type=int, default=40)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    files = sorted(args.images.glob("*.jpg"))[: args.views]
    images = [torch.from_numpy(np.asarray(Image.open(f).convert("RGB")).copy()).to(device) for f in files]
    result = {"device": device, "views": len(images), "size": list(images[0].shape[:2])}
    with tempfile.TemporaryDirectory() as folder:
        journal = EditJournal(Path(folder) / "sync")
        started = time.perf_counter()
        for idx, image in enumerate(images):
            journal.write_edit(idx, image)
        result["on_training_thread_ms_per_view"] = 1000 * (time.perf_counter() - started) / len(images)
        background = BackgroundJournal(EditJournal(Path(folder) / "background"))
        started = time.perf_counter()
        for idx, image in enumerate(images):
            background.write_edit(idx, image)
        result["background_caller_ms_per_view"] = 1000 * (time.perf_counter() - started) / len(images)
        background.flush()
        result["background_until_flushed_ms_per_view"] = 1000 * (time.perf_counter() - started) / len(images)
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in result.items()}), flush=True)


if __name__ == "__main__":
    main()
