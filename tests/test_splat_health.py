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
