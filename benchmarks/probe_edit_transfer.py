"""The round trip of one batch to the edit process and back, with an editor that takes no time (CPU only).

What a batch costs besides its edit: the training process sends the renders and originals of `--views` views at
`--size` px (float32, as the edit worker does) to a child (`igs2gs/edit_process.py`), the child returns one image per
view. Prints the median and all round trips in ms, after `--warm-up` untimed batches.

    python benchmarks/probe_edit_transfer.py [--views 8] [--size 512] [--batches 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from igs2gs.edit_process import EditProcess  # noqa: E402
from igs2gs.edit_worker import EditJob  # noqa: E402
from igs2gs.editor import EditSettings  # noqa: E402


class ReturnsRenders:
    """An editor that gives back its renders at once."""

    def edit(self, renders, originals, settings, generator=None):  # noqa: ANN001, ANN201
        return renders


def returns_renders(config, device):  # noqa: ANN001, ANN201 - the child's builder
    return ReturnsRenders()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--views", type=int, default=8)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--warm-up", type=int, default=3)
    args = parser.parse_args()
    config = argparse.Namespace(edit_max_side=0)
    process = EditProcess(config, "cpu", builder=returns_renders)
    settings = EditSettings(prompt="x")
    times = []
    try:
        for batch in range(args.warm_up + args.batches):
            jobs = [
                EditJob(v, torch.rand(1, 3, args.size, args.size), torch.rand(1, 3, args.size, args.size), settings, v)
                for v in range(args.views)
            ]
            started = time.perf_counter()
            images = process(jobs)
            if batch >= args.warm_up:
                times.append(1000 * (time.perf_counter() - started))
            assert all(torch.equal(image, job.render) for image, job in zip(images, jobs))
    finally:
        process.close()
    print(json.dumps({"views": args.views, "size": args.size, "median_ms": statistics.median(times), "ms": times}))


if __name__ == "__main__":
    main()
