"""Console progress of a dataset-update round: a line at every tenth of the round, and one at its end.

A round edits every training view once, one per training step; on a real scene it takes minutes
(96 views x about 2.5 s with the original settings), so silence until its end looks like a hang.
`RoundProgress` decides when to speak (at each 10 % of the views, or after `max_quiet_s` seconds
without a line) and what to say (round k of n, views edited, time per edit, time left in the round).
It takes the clock as an argument, so its decisions are testable without sleeping.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


def rounds_between(first_step: int, last_step: int, gs_steps: int) -> int:
    """How many rounds start at steps in [first_step, last_step] (a round starts where (step - 1) % gs_steps == 0)."""
    if last_step < first_step:
        return 0
    return (last_step - 1) // gs_steps - (first_step - 2) // gs_steps


def format_duration(seconds: float) -> str:
    """Seconds as "42 s", "3 min 05 s" or "1 h 02 min"."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


@dataclass
class RoundProgress:
    """Timing of one round and its progress lines; `done` counts views edited in the round (resumed ones too)."""

    round_number: int
    """1 for the first round of the run."""
    num_views: int
    """Views edited per round (the training views)."""
    started_at: float
    """Clock time at which this process began the round (or resumed it)."""
    total_rounds: Optional[int] = None
    """Rounds this run will have started by its last step; None when unknown."""
    start_done: int = 0
    """Views already edited when this process picked the round up (a run resumed mid-round)."""
    max_quiet_s: float = 60.0
    """Longest time without a progress line while the round runs."""
    done: int = field(init=False)
    edit_seconds: float = field(default=0.0, init=False)
    """Seconds spent inside the editor in this process."""
    _last_line_at: float = field(init=False)
    _last_tenth: int = field(init=False)

    def __post_init__(self) -> None:
        self.done = self.start_done
        self._last_line_at = self.started_at
        self._last_tenth = self._tenth(self.start_done)

    def _tenth(self, done: int) -> int:
        return 10 * done // max(1, self.num_views)

    @property
    def label(self) -> str:
        """ "round 2 of 3" (or "round 2" when the number of rounds is unknown)."""
        of = f" of {self.total_rounds}" if self.total_rounds else ""
        return f"round {self.round_number}{of}"

    @property
    def seconds_per_edit(self) -> float:
        """Mean time inside the editor per view edited by this process."""
        return self.edit_seconds / max(1, self.done - self.start_done)

    def seconds_left(self, now: float) -> float:
        """Time left in the round at the pace so far (editing and training steps together)."""
        edited_here = self.done - self.start_done
        if edited_here == 0:
            return float("nan")
        return (now - self.started_at) / edited_here * (self.num_views - self.done)

    def view_edited(self, edit_seconds: float, now: float) -> Optional[str]:
        """Count one edited view; return a progress line when one is due (never for the round's last view)."""
        self.done += 1
        self.edit_seconds += edit_seconds
        tenth = self._tenth(self.done)
        due = tenth > self._last_tenth or now - self._last_line_at >= self.max_quiet_s
        if not due or self.done >= self.num_views:
            return None
        self._last_tenth, self._last_line_at = tenth, now
        return self.line(now)

    def line(self, now: float) -> str:
        """ "igs2gs: round 2 of 3: 48/96 views edited, 2.47 s per edit, about 2 min 01 s left in this round"."""
        return (
            f"igs2gs: {self.label}: {self.done}/{self.num_views} views edited, {self.seconds_per_edit:.2f} s per edit, "
            f"about {format_duration(self.seconds_left(now))} left in this round"
        )

    def summary(self, now: float) -> str:
        """The round's closing line: views edited, wall time, time per edit, rounds still to come."""
        to_come = ""
        if self.total_rounds:
            rest = max(0, self.total_rounds - self.round_number)
            to_come = f"; {rest} more round{'s' if rest != 1 else ''} to come" if rest else "; last round"
        return (
            f"igs2gs: round {self.round_number} done, {self.num_views} views edited in "
            f"{now - self.started_at:.1f} s ({1000 * self.seconds_per_edit:.0f} ms per edit){to_come}"
        )
