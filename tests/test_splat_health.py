"""After each round: how much the splats changed, and a stop that names the cause when nothing changed."""

from __future__ import annotations

import pytest
import torch
from nerfstudio.models.splatfacto import SplatfactoModel

from igs2gs.errors import SplatsNotUpdatedError
from igs2gs.splat_health import SplatChangeMonitor, splat_change, stop_if_unchanged
from tests.test_pipeline import make_trainer


def gaussians(n: int = 5, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {
        name: torch.rand(n, *shape, generator=generator)
        for name, shape in {"means": (3,), "features_dc": (3,), "opacities": (1,), "scales": (3,)}.items()
    }


def test_the_change_is_the_mean_absolute_difference_per_parameter():
    params = gaussians()
    monitor = SplatChangeMonitor()
    monitor.begin(params)
    params["means"][0, 0] += 0.3  # mean |change| 0.3 / 15 = 0.02
    params["opacities"] += 0.5
    change = monitor.finish(params)
    assert change is not None and not change.unchanged
    assert change.mean_abs["means"] == pytest.approx(0.02)
    assert change.mean_abs["features_dc"] == 0.0 and change.mean_abs["opacities"] == pytest.approx(0.5)
    assert change.describe() == "mean |change| means 2.0e-02, colors 0.0e+00, opacities 5.0e-01 over 5 Gaussians"
    assert monitor.finish(params) is None  # one finish per begin


def test_a_changed_count_is_a_change():
    before = gaussians(5)
    change = splat_change({k: v.clone() for k, v in before.items() if k != "scales"}, gaussians(7))
    assert not change.unchanged and change.describe() == "the Gaussians went from 5 to 7"


def test_an_unchanged_round_stops_and_names_the_cause():
    params = gaussians()
    change = splat_change({k: v.clone() for k, v in params.items() if k != "scales"}, params)
    assert change.unchanged
    with pytest.raises(SplatsNotUpdatedError, match="optimizer binding") as raised:
        stop_if_unchanged(change, 2, optimizers_hold_model=False, model_name="SplatfactoModel")
    assert "round 2 trained on its edited views, but no Gaussian changed" in raised.value.message
    with pytest.raises(SplatsNotUpdatedError, match="learning rates"):
        stop_if_unchanged(change, 2, optimizers_hold_model=True, model_name="IGS2GSModel")


def test_splatfactos_own_model_stops_after_the_first_round(splatfacto_run, tmp_path, random_lpips_backbones):
    # NOTES.md item 5: splatfacto's model keeps the optimizers on the tensors the checkpoint replaced.
    trainer = make_trainer(splatfacto_run, tmp_path, iterations=14, model_target=SplatfactoModel)
    with pytest.raises(SplatsNotUpdatedError) as raised:
        trainer.train()
    message = raised.value.message
    assert "round 1 trained on its edited views, but no Gaussian changed" in message
    assert "the optimizers do not hold the model's tensors (optimizer binding)" in message
    assert "SplatfactoModel" in message
    assert trainer.step == 210  # stopped right after the round (steps 201..210), not at the end of the run


def test_a_background_round_that_ends_where_the_next_begins_reports_its_own_change(capsys):
    # A background round completes at the step that begins the next round: its report comes before the next
    # round's snapshot, under its own number, and covers the whole round.
    from types import SimpleNamespace

    from igs2gs.edit_guard import EditGuard
    from igs2gs.edit_schedule import EditRound
    from igs2gs.igs2gs_pipeline import IGS2GSPipelineConfig
    from igs2gs.run_keeper import RunKeeper

    params = gaussians()
    pipeline = SimpleNamespace(
        config=IGS2GSPipelineConfig(),
        edit_round=EditRound(),
        edit_guard=EditGuard(),
        model=SimpleNamespace(gauss_params=params),
    )
    keeper = RunKeeper()
    pipeline.edit_round.begin()
    keeper.round_began(pipeline, step=1)
    params["opacities"] += 0.25  # what training did during round 1
    for idx in range(2):  # both views land at step 51
        pipeline.edit_round.advance(2)
        keeper.view_done(pipeline, idx, step=51, kept=True)
    pipeline.edit_round.begin()  # round 2 begins in that same step
    keeper.round_began(pipeline, step=51)
    params["opacities"] += 0.5  # step 51's update
    keeper._after_step(pipeline, 51)
    out = capsys.readouterr().out
    assert "round 1 changed the splats" in out and "2.5e-01" in out and "5.0e-01" not in out
    assert "round 2" not in out
