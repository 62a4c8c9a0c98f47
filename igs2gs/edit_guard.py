"""One bad edit never ends a long run: the call to the 2D editor, with its failures handled.

- A result with NaN or inf is discarded: the view keeps its previous image (counted, reported).
- Out of GPU memory: the memory is freed and the view is retried at a smaller edit size, then
  skipped with a warning if it still does not fit.
- Any other error skips the view with a warning, unless it repeats view after view: then the
  cause is not one view, and the run stops with the error (`EditsFailingError`).
- Weights that cannot be loaded (`IP2PLoadError`) stop the run at once with their message.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence

import torch
from nerfstudio.utils.rich_utils import CONSOLE

from igs2gs.errors import EditsFailingError, IGS2GSConfigError

RETRY_SCALES = (0.75, 0.5)
"""Edit sizes tried after an out-of-memory error, as fractions of the first size."""
MIN_RETRY_SIDE = 32
"""No retry below this many pixels on the longer side."""


def retry_sides(first: int, scales: Sequence[float] = RETRY_SCALES, smallest: int = MIN_RETRY_SIDE) -> List[int]:
    """The longer sides to try, first `first`, then smaller ones (multiples of 8, at least `smallest`)."""
    sides = [first]
    for scale in scales:
        side = max(smallest, int(first * scale) // 8 * 8)
        if side < sides[-1]:
            sides.append(side)
    return sides


def free_accelerator_memory() -> None:
    """Return cached GPU memory after an out-of-memory error (a no-op without CUDA)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@dataclass
class RoundFaults:
    """The views whose edits failed in the current round."""

    non_finite: List[int] = field(default_factory=list)
    retried_smaller: List[int] = field(default_factory=list)
    skipped: List[int] = field(default_factory=list)

    def summary(self) -> Optional[str]:
        """One line for the round's report; None when every edit went through."""
        parts = []
        if self.non_finite:
            parts.append(f"{len(self.non_finite)} edits discarded for NaN/inf (views {_views(self.non_finite)})")
        if self.retried_smaller:
            parts.append(
                f"{len(self.retried_smaller)} retried smaller after running out of memory "
                f"(views {_views(self.retried_smaller)})"
            )
        if self.skipped:
            parts.append(f"{len(self.skipped)} skipped (views {_views(self.skipped)})")
        if not parts:
            return None
        return "; ".join(parts) + "; those views keep their previous image until the next round"


class EditGuard:
    """Runs one view's edit; `run` returns the edit, or None when the view keeps its previous image."""

    def __init__(
        self,
        max_consecutive_failures: int = 3,
        free_memory: Callable[[], None] = free_accelerator_memory,
        log: Callable[[str], None] = CONSOLE.log,
    ) -> None:
        self.max_consecutive_failures = max_consecutive_failures
        self.free_memory = free_memory
        self.log = log
        self.faults = RoundFaults()
        self.totals = {"non_finite": 0, "retried_smaller": 0, "skipped": 0}
        """Counts over the whole run."""
        self.last_kept = False
        """Whether the latest `run` returned an edit."""
        self._consecutive_failures = 0

    def run(self, idx: int, edit_at: Callable[[int], torch.Tensor], max_side: int) -> Optional[torch.Tensor]:
        """Call `edit_at(side)` (edit view `idx` at most `side` px on the longer side) until an edit comes back."""
        from igs2gs.ip2p import IP2PLoadError  # here, not at the top: every ns-* command imports this module

        self.last_kept = False
        sides = retry_sides(max_side)
        for attempt, side in enumerate(sides):
            out_of_memory = False
            try:
                edited = edit_at(side)
            except IP2PLoadError as err:
                raise IGS2GSConfigError(str(err)) from None
            except torch.OutOfMemoryError:
                out_of_memory = True
            except Exception as err:  # one view's failure must not end a run of hours; a repeated one does
                return self._failed(idx, err)
            if out_of_memory:  # outside the except block, so the error's frames (and their tensors) are gone
                self.free_memory()
                if attempt + 1 < len(sides):
                    self.log(
                        f"igs2gs: view {idx} ran out of memory when edited at {side} px; retrying at "
                        f"{sides[attempt + 1]} px (lower --pipeline.edit-max-side to avoid this)"
                    )
                    if attempt == 0:
                        self._count("retried_smaller", idx)
                continue
            if not bool(torch.isfinite(edited).all()):
                self._count("non_finite", idx)
                self.log(
                    f"igs2gs: the edit of view {idx} has NaN/inf values: discarded, the view keeps its previous image"
                )
                return None
            self._consecutive_failures = 0
            self.last_kept = True
            return edited
        self._count("skipped", idx)
        self.log(
            f"igs2gs: view {idx} ran out of memory even at {sides[-1]} px: skipped this round (it keeps its previous "
            "image); lower --pipeline.edit-max-side or free GPU memory"
        )
        return None

    def take_round_faults(self) -> RoundFaults:
        """The current round's faults; the next round starts with none."""
        faults, self.faults = self.faults, RoundFaults()
        return faults

    def _failed(self, idx: int, err: Exception) -> None:
        self._consecutive_failures += 1
        self._count("skipped", idx)
        if self._consecutive_failures >= self.max_consecutive_failures:
            raise EditsFailingError(
                f"the last {self._consecutive_failures} edits all failed, the latest (view {idx}) with "
                f"{type(err).__name__}: {err}"
            ) from err
        self.log(
            f"igs2gs: the edit of view {idx} failed ({type(err).__name__}: {err}); skipped, it keeps its previous image"
        )
        return None

    def _count(self, kind: str, idx: int) -> None:
        getattr(self.faults, kind).append(idx)
        self.totals[kind] += 1


def _views(views: List[int]) -> str:
    shown = ", ".join(str(v) for v in views[:10])
    return shown + (f" and {len(views) - 10} more" if len(views) > 10 else "")
