"""The dataset-update round schedule: when rounds start and how the cursor walks the views."""

import pytest

from igs2gs.edit_schedule import EditRound, starts_round


def test_rounds_start_at_step_one_past_each_multiple_of_gs_steps():
    starts = [step for step in range(30000, 37500) if starts_round(step, 2500)]
    assert starts == [30001, 32501, 35001]


def test_rounds_from_a_2500_step_checkpoint():
    # ns-train resumes at the saved step + 1; splatfacto's last save at 2,499 resumes at 2,500.
    assert [s for s in range(2500, 2500 + 7500) if starts_round(s, 2500)] == [2501, 5001, 7501]


@pytest.mark.parametrize("gs_steps", [0, -3])
def test_gs_steps_must_be_positive(gs_steps):
    with pytest.raises(ValueError, match="gs_steps must be >= 1"):
        starts_round(10, gs_steps)


def test_a_round_visits_every_view_once_in_index_order():
    edit_round = EditRound()
    edit_round.begin()
    visited = []
    while edit_round.active:
        visited.append(edit_round.cursor)
        edit_round.advance(5)
    assert visited == [0, 1, 2, 3, 4]
    assert edit_round.rounds_started == 1 and edit_round.cursor == 0


def test_advance_outside_a_round_is_an_error():
    with pytest.raises(AssertionError, match="call begin"):
        EditRound().advance(3)
