"""Progress lines of a round: when they come, what they say, and the count of rounds."""

from __future__ import annotations

import pytest

from igs2gs.edit_schedule import starts_round
from igs2gs.round_progress import RoundProgress, format_duration, rounds_between


@pytest.mark.parametrize("first, last, gs_steps", [(1, 7500, 2500), (30000, 37499, 2500), (200, 213, 50), (2, 3, 1)])
def test_rounds_between_counts_the_round_starts(first, last, gs_steps):
    expected = sum(starts_round(step, gs_steps) for step in range(first, last + 1))
    assert rounds_between(first, last, gs_steps) == expected


def test_rounds_between_small_ranges_match_the_schedule():
    for gs_steps in (1, 3, 7):
        for first in range(1, 20):
            for last in range(first - 1, 30):
                expected = sum(starts_round(s, gs_steps) for s in range(first, last + 1))
                assert rounds_between(first, last, gs_steps) == expected, (first, last, gs_steps)


def run_round(progress: RoundProgress, seconds_per_view: float, edit_seconds: float) -> list[tuple[int, float, str]]:
    """Feed every remaining view; return (views done, clock, line) for each line printed."""
    lines, now = [], progress.started_at
    while progress.done < progress.num_views:
        now += seconds_per_view
        line = progress.view_edited(edit_seconds, now)
        if line:
            lines.append((progress.done, now, line))
    return lines


def test_a_line_at_every_tenth_and_none_for_the_last_view():
    progress = RoundProgress(round_number=2, num_views=20, started_at=100.0, total_rounds=3)
    lines = run_round(progress, seconds_per_view=1.0, edit_seconds=0.5)
    assert [done for done, _, _ in lines] == [2, 4, 6, 8, 10, 12, 14, 16, 18]
    assert lines[4][2] == "igs2gs: round 2 of 3: 10/20 views edited, 0.50 s per edit, about 10 s left in this round"
    assert progress.summary(120.0) == (
        "igs2gs: round 2 done, 20 views edited in 20.0 s (500 ms per edit); 1 more round to come"
    )


def test_slow_rounds_speak_at_least_every_minute():
    progress = RoundProgress(round_number=1, num_views=1000, started_at=0.0)
    lines = run_round(progress, seconds_per_view=25.0, edit_seconds=24.0)
    clocks = [0.0] + [now for _, now, _ in lines]
    assert max(b - a for a, b in zip(clocks, clocks[1:])) <= 75.0  # 60 s, rounded up to the next view
    assert len(lines) < 1000 / 2  # and far from a line per view
    assert "round 1: " in lines[0][2]  # the number of rounds is unknown here


def test_a_resumed_round_counts_its_earlier_views_but_times_only_its_own():
    progress = RoundProgress(round_number=1, num_views=10, started_at=0.0, total_rounds=1, start_done=5)
    lines = run_round(progress, seconds_per_view=2.0, edit_seconds=1.0)
    assert [done for done, _, _ in lines] == [6, 7, 8, 9]
    assert lines[0][2].endswith("6/10 views edited, 1.00 s per edit, about 8 s left in this round")
    assert progress.summary(10.0).endswith("(1000 ms per edit); last round")


def test_format_duration():
    assert [format_duration(s) for s in (0.4, 42, 185, 3720)] == ["0 s", "42 s", "3 min 05 s", "1 h 02 min"]
