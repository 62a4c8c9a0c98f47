"""RoundReporter without a trainer: progress lines, viewer status and the writer call, on a fake clock."""

from __future__ import annotations

import torch

from igs2gs.edit_schedule import EditRound
from igs2gs.round_reporter import RoundReporter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run_round(reporter: RoundReporter, clock: FakeClock, edit_round: EditRound, step: int, views: int = 10) -> None:
    """Edit every remaining view of the round: 1 s per step, the last 0.5 s of it in the editor."""
    while edit_round.active:
        idx = edit_round.cursor
        clock.now += 1.0
        edit_round.advance(views)
        reporter.view_edited(edit_round, views, idx, torch.zeros(4, 4, 3), torch.ones(4, 4, 3), 0.5, step)
        step += 1


def test_lines_status_and_logs_of_a_round(monkeypatch, capsys):
    clock, statuses, written = FakeClock(), [], []
    reporter = RoundReporter(gs_steps=50, status=statuses.append, clock=clock)
    reporter.set_last_step(213)  # one round (at 201) in steps 200..213
    monkeypatch.setattr(reporter.edit_log, "write", lambda step, **counters: written.append((step, counters)))
    edit_round = EditRound()
    edit_round.begin()
    run_round(reporter, clock, edit_round, step=201)
    out = capsys.readouterr().out
    # The round began when its first edit started (0.5 s before it returned), so time is left after view 1.
    assert "round 1 of 1: 1/10 views edited, 0.50 s per edit, about 4 s left in this round" in out
    assert "round 1 of 1: 4/10 views edited, 0.50 s per edit, about 5 s left in this round" in out
    assert "round 1 done, 10 views edited in 9.5 s (500 ms per edit); last round" in out
    assert statuses[0] == "round 1 of 1: 1/10 views" and statuses[-1] == "round 1 of 1 done"
    assert written == [(210, {"round_number": 1, "views_edited": 10, "seconds_per_edit": 0.5, "round_seconds": 9.5})]
    assert sorted(reporter.edit_log.samples) == [0, 2, 5, 7]


def test_a_round_resumed_mid_way_and_a_restarted_round(capsys):
    clock = FakeClock()
    reporter = RoundReporter(gs_steps=50, clock=clock)
    resumed = EditRound(active=True, cursor=6, rounds_started=2)  # as loaded from a checkpoint
    run_round(reporter, clock, resumed, step=300)
    assert "round 2 done, 10 views edited in 3.5 s (500 ms per edit)" in capsys.readouterr().out
    restarted = EditRound(active=True, cursor=3, rounds_started=3)
    run_round(reporter, clock, restarted, step=400)
    restarted.begin()  # "Edit all views now" during the round: round 4 starts from view 0
    run_round(reporter, clock, restarted, step=500)
    out = capsys.readouterr().out
    assert "round 3 done" in out and "round 4 done, 10 views edited in 9.5 s" in out


def test_background_edits_that_land_late_count_the_rounds_from_the_rounds_start(capsys):
    # Rounds at steps 1, 51 and 101 of a run ending at step 149. The first background edit of the round begun at
    # step 1 lands at step 45: still three rounds in all, not the two that begin after step 45.
    clock = FakeClock()
    reporter = RoundReporter(gs_steps=50, clock=clock)
    reporter.set_last_step(149)
    edit_round = EditRound()
    edit_round.begin()
    step = 45
    while edit_round.active:
        idx = edit_round.cursor
        clock.now += 1.0
        edit_round.advance(10)
        reporter.view_edited(edit_round, 10, idx, torch.zeros(4, 4, 3), torch.ones(4, 4, 3), 0.5, step, 1)
        step += 1
    out = capsys.readouterr().out
    assert "round 1 of 3: 1/10 views edited" in out and "2 more rounds to come" in out


def test_a_background_rounds_time_starts_with_its_first_batch(capsys):
    # Two batches of 5 views, each 2.5 s in the editor (0.5 s per view): the round's first view returns 2.5 s after
    # the round began, not 0.5 s.
    clock = FakeClock()
    reporter = RoundReporter(gs_steps=50, clock=clock)
    edit_round = EditRound()
    edit_round.begin()
    for batch in range(2):
        clock.now += 2.5
        for view in range(5 * batch, 5 * batch + 5):
            edit_round.advance(10)
            reporter.view_edited(
                edit_round, 10, view, torch.zeros(4, 4, 3), torch.ones(4, 4, 3), 0.5, 1, began_seconds_ago=2.5
            )
    assert "round 1 done, 10 views edited in 5.0 s (500 ms per edit)" in capsys.readouterr().out
