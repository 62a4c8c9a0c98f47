"""Where the wall time of a py-spy recording goes, as an indented tree of inclusive seconds.

Reads py-spy's raw output (`py-spy record --format raw --idle [--subprocesses] [--threads]`: one line per distinct
stack, frames joined by ";", then its sample count) and prints the call tree below the first frame that contains
ROOT, keeping stacks whose frames contain every --has pattern (e.g. a process's or a thread's name). Import machinery
frames are left out, so that nested imports read as module to module.

    python benchmarks/pyspy_tree.py pyspy_ours-spy.txt --root "Trainer.setup" --has "MainThread" --depth 8 --min 0.2
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path
from typing import Iterable, Iterator, Optional, Tuple

SKIPPED = ("<frozen importlib._bootstrap", "_call_with_frames_removed")
"""Frames of the import machinery."""


def read_raw(path: Path) -> Iterator[Tuple[list[str], int]]:
    """(frames from the outermost, samples) of each line of a raw recording."""
    for line in path.read_text().splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if stack and count.isdigit():
            yield stack.split(";"), int(count)


def call_tree(stacks: Iterable[Tuple[list[str], int]], root: Optional[str], has: list[str], depth: int) -> Counter:
    """Samples per call path (a tuple of frames), up to `depth` frames below the first frame containing `root`."""
    tree: Counter = Counter()
    for frames, count in stacks:
        if not all(any(pattern in frame for frame in frames) for pattern in has):
            continue
        if root:
            first = next((i for i, frame in enumerate(frames) if root in frame), None)
            if first is None:
                continue
            frames = frames[first:]
        frames = [frame for frame in frames if not any(skipped in frame for skipped in SKIPPED)]
        for end in range(1, min(depth, len(frames)) + 1):
            tree[tuple(frames[:end])] += count
    return tree


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("raw", type=Path)
    parser.add_argument("--root", help="start each stack at the first frame containing this")
    parser.add_argument("--has", action="append", default=[], help="keep stacks with a frame containing this")
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--min", type=float, default=0.2, help="leave out paths under this many seconds")
    parser.add_argument("--rate", type=float, default=100.0, help="py-spy's samples per second")
    args = parser.parse_args()
    tree = call_tree(read_raw(args.raw), args.root, args.has, args.depth)
    for path, count in sorted(tree.items()):
        if count / args.rate >= args.min:
            print(f"{'  ' * (len(path) - 1)}{count / args.rate:7.2f} {path[-1][:160]}")


if __name__ == "__main__":
    main()
