"""Batched round edits (igs2gs/fast_edits.py) and the cheaper training step (igs2gs/train_speed.py), on CPU."""

from __future__ import annotations

from typing import List, Optional, Sequence, Union

import pytest
import torch

from igs2gs.editor import EditSettings
from igs2gs.igs2gs_pipeline import edit_seed
from igs2gs.train_speed import loss_without_ssim, use_fused_adam
from tests.test_pipeline import make_trainer


class RecordingEditor:
    """Inverts the originals and records, per call, the views' seeds, the batch shape and the view ids."""

    def __init__(self) -> None:
        self.calls: List[dict] = []

    def edit(
        self,
        renders: torch.Tensor,
        originals: torch.Tensor,
        settings: EditSettings,
        generator: Union[None, torch.Generator, Sequence[torch.Generator]] = None,
        view_ids: Optional[Sequence[int]] = None,
    ) -> torch.Tensor:
        gens = [generator] if isinstance(generator, torch.Generator) else list(generator or [])
        self.calls.append({"shape": tuple(renders.shape), "seeds": [g.initial_seed() for g in gens], "views": view_ids})
        return 1.0 - originals


def run_round(splatfacto_run, tmp_path, batch_size: int):
    trainer = make_trainer(splatfacto_run, tmp_path)
    editor = RecordingEditor()
    trainer.pipeline.__dict__["editor"] = editor  # the cached property's slot
    trainer.pipeline.config.edit_batch_size = batch_size
    trained_on: List[torch.Tensor] = []
    get_loss = trainer.pipeline.model.get_loss_dict

    def recording_loss(outputs, batch, metrics_dict=None):
        trained_on.append(batch["image"][..., :3].detach().clone())
        return get_loss(outputs, batch, metrics_dict)

    trainer.pipeline.model.get_loss_dict = recording_loss
    trainer.train()
    return trainer, editor, trained_on


@pytest.mark.parametrize("batch_size", [4, 1])
def test_batched_rounds_keep_each_views_seed_and_the_training_order(
    splatfacto_run, tmp_path, random_lpips_backbones, batch_size
):
    trainer, editor, trained_on = run_round(splatfacto_run, tmp_path, batch_size)
    datamanager = trainer.pipeline.datamanager
    views = datamanager.num_train_views
    first_step = 201  # the round of the step-199 checkpoint with gs_steps 50 (make_trainer)
    sizes = [call["shape"][0] for call in editor.calls]
    expected_sizes = [min(batch_size, views - start) for start in range(0, views, batch_size)]
    assert sizes == expected_sizes
    seeds = [seed for call in editor.calls for seed in call["seeds"]]
    assert seeds == [edit_seed(0, first_step + k) for k in range(views)]  # each view's seed is its own step's
    if batch_size > 1:
        assert [v for call in editor.calls for v in call["views"]] == list(range(views))
    # training still takes view k at the round's k-th step, and trains on its edit
    start = trainer._start_step
    for k in range(views):
        expected = torch.round((1.0 - datamanager.original_images[k][..., :3]) * 255) / 255
        torch.testing.assert_close(trained_on[first_step - start + k], expected, atol=1e-6, rtol=0)


def test_loss_without_ssim_equals_splatfactos_loss(splatfacto_run, tmp_path, random_lpips_backbones):
    from nerfstudio.models.splatfacto import SplatfactoModel

    trainer = make_trainer(splatfacto_run, tmp_path)
    model, datamanager = trainer.pipeline.model, trainer.pipeline.datamanager
    model.step_cb(trainer.optimizers, trainer._start_step)  # as the trainer does before a step
    camera, batch = datamanager.next_train_idx(3)
    outputs = model(camera)
    ours = loss_without_ssim(model, outputs, batch)
    reference = SplatfactoModel.get_loss_dict(model, outputs, batch)
    assert ours.keys() == reference.keys()
    for key in ours:
        torch.testing.assert_close(ours[key], reference[key], rtol=0, atol=0)


def test_fused_adam_takes_the_same_step_and_keeps_the_state() -> None:
    torch.manual_seed(0)
    params = {name: torch.nn.Parameter(torch.randn(50, 3)) for name in ("a", "b")}
    grads = [torch.randn(50, 3) for _ in range(6)]
    plain = {n: torch.optim.Adam([p], lr=0.01, eps=1e-15) for n, p in params.items()}
    fused_params = {n: torch.nn.Parameter(p.detach().clone()) for n, p in params.items()}
    fused = {n: torch.optim.Adam([p], lr=0.01, eps=1e-15) for n, p in fused_params.items()}
    for step, grad in enumerate(grads):
        if step == 3:  # switch after a few steps: the moments and step counts carry over
            assert use_fused_adam(fused, device_type="cpu") == ["a", "b"]
            assert use_fused_adam(fused, device_type="cpu") == []
        for group in (params, fused_params):
            for p in group.values():
                p.grad = grad.clone()
        for opt in (*plain.values(), *fused.values()):
            opt.step()
    for name in params:
        torch.testing.assert_close(fused_params[name], params[name], rtol=1e-6, atol=1e-7)
        assert fused[name].param_groups[0]["fused"] is True
    assert use_fused_adam(plain, device_type="cuda") == []  # CPU parameters: left alone on CUDA's switch
