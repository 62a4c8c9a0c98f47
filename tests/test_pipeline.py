"""The pipeline and model in-process, on a splatfacto checkpoint of a tiny scene, with a fake editor.

Covers NOTES.md items 3-6: the optimizers update the loaded Gaussians, refinement works after loading
from inside the densification window, edits happen at full resolution from inside the resolution
schedule, and the means learning rate is the one chosen for editing.
"""

from __future__ import annotations

import copy
import sys
from typing import List, Optional

import numpy as np
import pytest
import torch
from nerfstudio.models.splatfacto import SplatfactoModel
from PIL import Image

from igs2gs.editor import EditSettings
from igs2gs.igs2gs import IGS2GSModel
from igs2gs.igs2gs_config import MEANS_LR, igs2gs_method
from igs2gs.igs2gs_pipeline import IGS2GSPipeline, edit_seed
from igs2gs.optimizer_binding import optimizers_hold


class InvertEditor:
    """A deterministic, view-consistent editor: the negative of the original photo."""

    def __init__(self) -> None:
        self.calls: List[tuple] = []

    def edit(self, renders, originals, settings: EditSettings, generator: Optional[torch.Generator] = None):
        self.calls.append((tuple(renders.shape), tuple(originals.shape), settings.prompt))
        return 1.0 - originals


class InvertEditorPipeline(IGS2GSPipeline):
    def build_editor(self):
        return InvertEditor()


def make_trainer(
    splatfacto_run, tmp_path, iterations: int = 14, model_target=None, device_type: str = "cpu", **model_fields
):
    config = copy.deepcopy(igs2gs_method.config)
    config.machine.device_type = device_type
    config.vis = "tensorboard"
    config.output_dir = tmp_path
    config.timestamp = "test"
    config.pipeline.datamanager.data = splatfacto_run["scene"]
    config.load_dir = splatfacto_run["run"] / "nerfstudio_models"
    config.max_num_iterations = iterations
    config.pipeline.gs_steps = 50  # from the step-199 checkpoint: a round at step 201
    config.pipeline.prompt = "invert it"
    config.pipeline._target = InvertEditorPipeline
    if model_target is not None:
        config.pipeline.model._target = model_target
    for name, value in model_fields.items():
        setattr(config.pipeline.model, name, value)
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    return trainer


GAUSSIANS = ["means", "scales", "quats", "features_dc", "features_rest", "opacities"]


@pytest.fixture
def trainer(splatfacto_run, tmp_path, random_lpips_backbones):
    return make_trainer(splatfacto_run, tmp_path)


def test_optimizers_hold_the_loaded_gaussians_and_training_changes_them(trainer, splatfacto_run):
    model = trainer.pipeline.model
    checkpoint = splatfacto_run["checkpoint"]["pipeline"]
    assert model.num_points == checkpoint["_model.gauss_params.means"].shape[0]
    assert optimizers_hold(trainer.optimizers.optimizers, model.gauss_params)
    for name in GAUSSIANS:
        assert trainer.optimizers.optimizers[name].param_groups[0]["params"][0] is model.gauss_params[name]
    before = {name: model.gauss_params[name].detach().clone() for name in GAUSSIANS}
    trainer.train()
    for name in ("means", "features_dc", "opacities", "scales"):
        after = model.gauss_params[name].detach()
        assert after.shape != before[name].shape or not torch.equal(after, before[name]), f"{name} unchanged"


def test_the_loaded_checkpoint_replaces_the_seeds_built_without_a_neighbour_search(
    splatfacto_run, tmp_path, random_lpips_backbones, monkeypatch
):
    monkeypatch.setitem(sys.modules, "sklearn.neighbors", None)  # splatfacto's own search would import it
    trainer = make_trainer(splatfacto_run, tmp_path)
    checkpoint = splatfacto_run["checkpoint"]["pipeline"]
    model = trainer.pipeline.model
    for name in GAUSSIANS:
        assert torch.equal(model.gauss_params[name].detach(), checkpoint[f"_model.gauss_params.{name}"])


def test_seed_neighbours_are_the_mean_spacing_of_the_seeds_bounding_box(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.neighbors", None)
    seeds = torch.rand(1000, 3) * 2.0
    seeds[0], seeds[1] = torch.zeros(3), torch.full((3,), 2.0)
    distances, indices = IGS2GSModel.k_nearest_sklearn(None, seeds, 3)  # type: ignore[arg-type]
    assert distances.shape == indices.shape == (1000, 3) and distances.dtype == np.float32
    assert np.allclose(distances, 0.2) and (indices == -1).all()
    assert IGS2GSModel.k_nearest_sklearn(None, seeds[:0], 3)[0].shape == (0, 3)  # type: ignore[arg-type]


def test_without_rebinding_the_optimizers_hold_dead_tensors(splatfacto_run, tmp_path, random_lpips_backbones):
    # NOTES.md item 5, reproduced with splatfacto's own model: this is what the re-binding fixes.
    trainer = make_trainer(splatfacto_run, tmp_path, model_target=SplatfactoModel)
    assert not optimizers_hold(trainer.optimizers.optimizers, trainer.pipeline.model.gauss_params)


def test_a_round_writes_every_edit_into_the_cache_and_keeps_the_originals(trainer, splatfacto_run):
    datamanager = trainer.pipeline.datamanager
    datamanager.cached_train  # noqa: B018 (loading the cache records the originals)
    originals = [image.clone() for image in datamanager.original_images]
    trainer.train()
    editor = trainer.pipeline.editor
    views = datamanager.num_train_views
    # every view edited once (edit_batch_size views per editor call)
    assert sum(call[0][0] for call in editor.calls) == views and datamanager.edited_views == set(range(views))
    for idx in range(views):
        cached = datamanager.cached_train[idx]["image"]
        assert cached.dtype == torch.float32
        expected = torch.round((1.0 - originals[idx][..., :3]) * 255) / 255
        torch.testing.assert_close(cached[..., :3], expected, atol=1e-6, rtol=0)
        assert torch.equal(datamanager.original_images[idx], originals[idx])
    photos = {p.name: np.asarray(Image.open(p), dtype=np.float32)[..., :3] / 255 for p in splatfacto_run["photos"]}
    names = [p.name for p in datamanager.train_dataset.image_filenames]
    for idx, name in enumerate(names):
        np.testing.assert_allclose(datamanager.original_image(idx).numpy(), photos[name], atol=1e-6)


def test_edits_are_made_at_full_resolution_from_inside_the_resolution_schedule(trainer, splatfacto_run):
    assert splatfacto_run["checkpoint"]["step"] < 6000  # inside splatfacto's resolution schedule
    trainer.train()
    shapes = {call[0][1:] for call in trainer.pipeline.editor.calls}  # each view of each batch
    assert shapes == {(3, 64, 64)}


def test_refinement_after_loading_inside_the_densification_window(splatfacto_run, tmp_path, random_lpips_backbones):
    assert splatfacto_run["checkpoint"]["step"] < 15000  # inside splatfacto's densification window
    trainer = make_trainer(splatfacto_run, tmp_path, iterations=20, warmup_length=0, refine_every=5)
    model = trainer.pipeline.model
    trainer.train()  # refines at steps 205, 210, 215: index errors here without the re-binding
    for name in GAUSSIANS:
        param = model.gauss_params[name]
        optimizer = trainer.optimizers.optimizers[name]
        assert optimizer.param_groups[0]["params"][0] is param
        assert optimizer.state[param]["exp_avg"].shape == param.shape


def test_means_learn_at_the_editing_rate_not_the_decayed_checkpoint_rate(trainer):
    trainer.train()
    lr = trainer.optimizers.optimizers["means"].param_groups[0]["lr"]
    # 14 steps into an exponential decay from MEANS_LR to MEANS_LR / 10 over 7,500 steps
    assert MEANS_LR * 0.99 < lr <= MEANS_LR


def test_edit_seeds_are_reproducible_and_differ_between_steps():
    assert edit_seed(0, 201) == edit_seed(0, 201)
    assert len({edit_seed(0, step) for step in range(1000)}) == 1000
    assert edit_seed(0, 201) != edit_seed(1, 201)
