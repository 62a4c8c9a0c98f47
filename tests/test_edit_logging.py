"""Per-round logs through nerfstudio's writer: the before/after grid and counters reach tensorboard."""

from __future__ import annotations

import pytest
import torch

from igs2gs.edit_logging import GRID_NAME, SCALAR_NAMES, EditLog, image_grid, sample_views, thumbnail, writer
from tests.test_pipeline import make_trainer


def test_sample_views_spread_without_repeats():
    assert sample_views(10, 4) == [0, 2, 5, 7]
    assert sample_views(3, 4) == [0, 1, 2]
    assert sample_views(0, 4) == [] and sample_views(5, 0) == []


def test_grid_rows_are_views_and_columns_render_then_edit():
    log = EditLog(num_samples=2, max_side=8)
    log.begin(num_views=4)  # samples views 0 and 2
    for idx in range(4):
        log.record(idx, torch.full((16, 12, 3), 0.1 * idx), torch.full((16, 12, 3), 0.5 + 0.1 * idx))
    assert sorted(log.samples) == [0, 2]
    grid = log.grid()  # cells shrunk to 8 x 6, padded by 2 px of white
    assert grid.shape == (2 * (8 + 2) + 2, 2 * (6 + 2) + 2, 3)
    assert torch.allclose(grid[2:10, 2:8], torch.tensor(0.0)) and torch.allclose(grid[12:20, 10:16], torch.tensor(0.7))
    assert image_grid([[torch.zeros(4, 4, 3)]], pad=0).shape == (4, 4, 3)
    assert thumbnail(torch.rand(4, 6, 3), 100).shape == (4, 6, 3)


def read_tensorboard(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = sorted(folder.rglob("events.out.tfevents*"))
    assert files, f"no tensorboard event file under {folder}"
    accumulator = EventAccumulator(str(files[-1].parent), size_guidance={"images": 0, "scalars": 0})
    accumulator.Reload()
    return accumulator


def test_a_round_logs_its_grid_and_counters_to_tensorboard(splatfacto_run, tmp_path, random_lpips_backbones, capsys):
    trainer = make_trainer(splatfacto_run, tmp_path)  # steps 200..213, a round of 10 views at steps 201..210
    trainer.train()
    for event_writer in writer.EVENT_WRITERS:
        if isinstance(event_writer, writer.TensorboardWriter):
            event_writer.tb_writer.flush()
    events = read_tensorboard(tmp_path)
    images = events.Images(GRID_NAME)
    assert [image.step for image in images] == [210]
    assert (images[0].width, images[0].height) == (2 * 66 + 2, 4 * 66 + 2)  # views 0, 2, 5, 7: render | edit
    scalars = {name: [(s.step, s.value) for s in events.Scalars(name)] for name in SCALAR_NAMES}
    assert scalars["igs2gs/round"] == [(210, 1.0)] and scalars["igs2gs/views_edited"] == [(210, 10.0)]
    assert scalars["igs2gs/seconds_per_edit"][0][1] > 0 and scalars["igs2gs/round_seconds"][0][1] > 0
    out = capsys.readouterr().out
    assert "round 1 of 1: 5/10 views edited" in out and "round 1 done, 10 views edited in" in out


@pytest.mark.parametrize("views", [1, 3])
def test_tiny_rounds_still_give_a_grid(views):
    log = EditLog()
    log.begin(views)
    for idx in range(views):
        log.record(idx, torch.rand(5, 5, 3), torch.rand(5, 5, 3))
    assert log.grid().shape[0] == min(views, 4) * 7 + 2
