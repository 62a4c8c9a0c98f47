"""The cheaper training step (issue 3): the same loss, metrics and modes with fewer launches.

GraphedLPIPS captures CUDA graphs only on a GPU (tests/test_gpu.py checks the replay against eager LPIPS
there); on the CPU it must run the plain loss.
"""

from __future__ import annotations

import torch
from torchmetrics.image import PeakSignalNoiseRatio

from igs2gs.graphed_lpips import GraphedLPIPS
from igs2gs.train_speed import train_psnr
from tests.test_pipeline import make_trainer


def test_train_psnr_matches_torchmetrics():
    torch.manual_seed(0)
    pred, gt = torch.rand(17, 23, 3), torch.rand(17, 23, 3)
    expected = PeakSignalNoiseRatio(data_range=1.0)(pred, gt)
    torch.testing.assert_close(train_psnr(pred, gt), expected)
    assert train_psnr(gt * 0.5, gt) < train_psnr(gt * 0.9, gt)


def test_graphed_lpips_runs_the_plain_loss_off_cuda():
    calls = []

    def loss(pred, gt):
        calls.append(pred.shape)
        return ((pred - gt) ** 2).mean()

    graphed = GraphedLPIPS(loss)
    graphed.capture([(8, 8)], torch.device("cpu"))
    assert graphed.sizes == []  # nothing captured on the CPU
    pred = torch.rand(1, 3, 8, 8, requires_grad=True)
    gt = torch.rand(1, 3, 8, 8)
    value = graphed(pred, gt)
    value.backward()
    assert calls == [(1, 3, 8, 8)]
    torch.testing.assert_close(pred.grad, 2 * (pred - gt).detach() / pred.numel())


def test_too_many_image_sizes_capture_nothing():
    graphed = GraphedLPIPS(lambda p, g: (p - g).abs().mean(), max_sizes=2)
    graphed.capture([(8, 8), (8, 16), (16, 8)], torch.device("cuda"))  # returns before touching CUDA
    assert graphed.sizes == []


def test_model_loss_and_metrics_equal_splatfactos(splatfacto_run, tmp_path, random_lpips_backbones):
    trainer = make_trainer(splatfacto_run, tmp_path, iterations=1)
    pipeline, model = trainer.pipeline, trainer.pipeline.model
    camera, batch = pipeline.datamanager.next_train(0)
    model.train()
    model.step_cb(trainer.optimizers, 201)  # as the trainer's callback does before each step
    outputs = model(camera)
    metrics = model.get_metrics_dict(outputs, batch)
    gt = model.composite_with_background(model.get_gt_img(batch["image"]), outputs["background"])
    torch.testing.assert_close(metrics["psnr"], model.psnr(outputs["rgb"], gt))
    assert metrics["gaussian_count"] == model.num_points
    pred = outputs["rgb"].permute(2, 0, 1)[None]
    expected = model.lpips.net(pred, gt.permute(2, 0, 1)[None], normalize=True).mean()
    torch.testing.assert_close(model.lpips_loss(outputs, batch), expected)


def test_pipeline_train_mode_is_set_again_when_the_model_left_it(splatfacto_run, tmp_path, random_lpips_backbones):
    trainer = make_trainer(splatfacto_run, tmp_path, iterations=1)
    pipeline = trainer.pipeline
    pipeline.train()
    assert pipeline.model.training and pipeline.model.camera_optimizer.training
    pipeline.model.eval()  # as the viewer does around a render
    assert not pipeline.model.camera_optimizer.training
    pipeline.train()
    assert pipeline.model.training and pipeline.model.camera_optimizer.training
    pipeline.eval()
    assert not pipeline.training and not pipeline.model.camera_optimizer.training


def test_a_failed_lpips_capture_leaves_the_eager_loss(splatfacto_run, tmp_path, random_lpips_backbones, monkeypatch):
    trainer = make_trainer(splatfacto_run, tmp_path, iterations=1)
    model = trainer.pipeline.model

    def failing_capture(sizes, device):
        raise RuntimeError("CUDA error: operation not permitted when stream is capturing")

    monkeypatch.setattr(model.graphed_lpips, "capture", failing_capture)
    model.capture_lpips_graphs([(64, 64)])
    assert model.graphed_lpips.sizes == []
    trainer.train()  # the run goes on with the eager loss
    assert trainer.step == 200
