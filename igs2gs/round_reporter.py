"""What the user sees of the dataset-update rounds: console progress, writer logs and the viewer's status.

The pipeline calls `RoundReporter.view_edited` after every edit; the reporter picks a round up on
its first edit (also a round resumed from a checkpoint mid-way or restarted from the viewer), and
closes it when the round is over.
"""

from __future__ import annotations

import time
from typing import Callable, Optional

import torch
from nerfstudio.utils.rich_utils import CONSOLE

from igs2gs.edit_logging import EditLog
from igs2gs.edit_schedule import EditRound
from igs2gs.round_progress import RoundProgress, rounds_between


class RoundReporter:
    """Feeds `RoundProgress` (console), `EditLog` (tensorboard/wandb) and an optional viewer status line."""

    def __init__(
        self,
        gs_steps: int,
        status: Optional[Callable[[str], None]] = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.gs_steps = gs_steps
        self.status = status
        self.clock = clock
        self.last_step: Optional[int] = None
        """The run's last training step, once known (`set_last_step`); gives the "of n" in "round k of n"."""
        self.progress: Optional[RoundProgress] = None
        self.edit_log = EditLog()

    def set_last_step(self, last_step: int) -> None:
        """Tell the reporter where training ends, so it can count the rounds to come."""
        self.last_step = last_step

    def view_edited(
        self,
        edit_round: EditRound,  # already advanced past this view
        num_views: int,
        idx: int,
        render: torch.Tensor,  # [H, W, 3] the render of view idx at this step
        edited: torch.Tensor,  # [H, W, 3] the edited image now in the cache
        edit_seconds: float,
        step: int,
        round_start_step: Optional[int] = None,
        began_seconds_ago: Optional[float] = None,
    ) -> None:
        """Account for the edit of view `idx` at `step`; print, log and update the status as due. A background
        edit lands steps after its round began: `round_start_step` (default `step`) counts the rounds to come, and
        `began_seconds_ago` (default `edit_seconds`) says how long ago its work began: a batch edits its views
        together, so the round's first view took its batch's whole time."""
        now = self.clock()
        round_number = edit_round.rounds_started
        if self.progress is None or self.progress.round_number != round_number:
            # The round began when this first edit started, not when it returned.
            first_step = step if round_start_step is None else round_start_step
            began = edit_seconds if began_seconds_ago is None else began_seconds_ago
            self._begin(round_number, num_views, done=idx, step=first_step, started_at=now - began)
        assert self.progress is not None
        self.edit_log.record(idx, render, edited)
        line = self.progress.view_edited(edit_seconds, now)
        if line:
            CONSOLE.log(line)
        if not edit_round.active:
            self._end(step, now)
        elif self.status is not None:
            self.status(f"{self.progress.label}: {self.progress.done}/{num_views} views")

    def _begin(self, round_number: int, num_views: int, done: int, step: int, started_at: float) -> None:
        total = None
        if self.last_step is not None:
            total = round_number + rounds_between(step + 1, self.last_step, self.gs_steps)
        self.progress = RoundProgress(round_number, num_views, started_at, total_rounds=total, start_done=done)
        self.edit_log.begin(num_views)

    def _end(self, step: int, now: float) -> None:
        progress = self.progress
        assert progress is not None, "_end() without a round; view_edited() begins one"
        CONSOLE.log(progress.summary(now))
        self.edit_log.write(
            step,
            round_number=progress.round_number,
            views_edited=progress.done - progress.start_done,
            seconds_per_edit=progress.seconds_per_edit,
            round_seconds=now - progress.started_at,
        )
        if self.status is not None:
            self.status(f"{progress.label} done")
        self.progress = None
