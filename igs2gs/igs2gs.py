"""The Instruct-GS2GS model: splatfacto trained on edited images with L1 + LPIPS."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Tuple, Type

import numpy as np
import torch
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes
from nerfstudio.engine.optimizers import Optimizers
from nerfstudio.models.splatfacto import SplatfactoModel, SplatfactoModelConfig
from nerfstudio.utils.rich_utils import CONSOLE

from igs2gs.graphed_lpips import GraphedLPIPS
from igs2gs.optimizer_binding import rebind_optimizers
from igs2gs.torchmetrics_imports import torchmetrics_without_transformers
from igs2gs.train_speed import loss_without_ssim, train_psnr, use_fused_adam


@dataclass
class IGS2GSModelConfig(SplatfactoModelConfig):
    """splatfacto, trained with the loss of the Instruct-GS2GS paper (L1 + LPIPS)."""

    _target: Type = field(default_factory=lambda: IGS2GSModel)
    num_downscales: int = 0
    """Resolution schedule of splatfacto: train at 1/2^d resolution at first. 0 (default) trains and edits at
    full resolution from the first step, also when the checkpoint was saved inside splatfacto's schedule
    (step < 6,000), where a downscaled render would not match the full-size original photo."""
    ssim_lambda: float = 0.0
    """Weight of splatfacto's SSIM term in the main loss (the paper uses none: 0)."""
    l1_loss_mult: float = 1.0
    """Multiplier of the L1 loss between the render and the (edited) training image."""
    lpips_loss_mult: float = 1.0
    """Multiplier of the LPIPS loss (AlexNet backbone, as splatfacto's LPIPS metric). 0 turns it off."""
    fused_adam: bool = True
    """Step the Gaussians' Adam optimizers with torch's fused kernel on CUDA (the same update, fewer launches;
    igs2gs/train_speed.py)."""
    lpips_cuda_graphs: bool = True
    """Replay the LPIPS loss (forward and backward) as CUDA graphs, one per training image size (the same kernels in
    two launches; igs2gs/graphed_lpips.py)."""


class IGS2GSModel(SplatfactoModel):
    """splatfacto that keeps its optimizers bound to the loaded Gaussians and adds an LPIPS loss."""

    config: IGS2GSModelConfig

    def populate_modules(self):
        with torchmetrics_without_transformers():  # splatfacto imports its metrics here (torchmetrics_imports.py)
            super().populate_modules()
        # Call the metric's network, not the metric: the metric accumulates scores (and their graphs).
        self.graphed_lpips = GraphedLPIPS(lambda pred, gt: self.lpips.net(pred, gt, normalize=True).mean())

    def k_nearest_sklearn(self, x: torch.Tensor, k: int) -> Tuple[np.ndarray, np.ndarray]:
        """Placeholder neighbours for the seed Gaussians: `k` distances per point [N, k], all the mean spacing of N
        points spread evenly over their bounding box, and no indices (-1).

        splatfacto sets its seed Gaussians' first scales from their nearest neighbours, found with scikit-learn:
        1.7 s of a bear run's start on the lent GPU machine (34k points, with the import). igs2gs always continues
        from a checkpoint whose Gaussians replace the seeds (the trainer refuses to start without one; `ns-viewer`,
        `ns-render` and `ns-export` load one), so their scales are never used.
        """
        count = x.shape[0]
        extent = (x.detach().amax(dim=0) - x.detach().amin(dim=0)).clamp_min(1e-6) if count else torch.ones(3)
        spacing = float((extent.double().prod() / max(count, 1)) ** (1 / 3))
        return np.full((count, k), spacing, dtype=np.float32), np.full((count, k), -1, dtype=np.int64)

    def capture_lpips_graphs(self, sizes) -> None:
        """Capture the LPIPS loss for the training images' (height, width) sizes (CUDA; see graphed_lpips.py)."""
        if not (self.config.lpips_cuda_graphs and self.config.lpips_loss_mult > 0):
            return
        try:
            self.graphed_lpips.capture(sizes, self.device)
        except RuntimeError as err:  # a speed-up only: the loss runs eagerly instead
            self.graphed_lpips = GraphedLPIPS(self.graphed_lpips.loss)
            CONSOLE.log(f"igs2gs: the LPIPS loss could not be captured as CUDA graphs ({err}); it runs eagerly")

    def load_state_dict(self, dict, **kwargs):  # type: ignore[override]  # noqa: A002 (parent's signature)
        super().load_state_dict(dict, **kwargs)
        # Densification statistics are per Gaussian: start them afresh for the loaded Gaussians.
        self.strategy_state = self.strategy.initialize_state(scene_scale=1.0)

    def get_training_callbacks(
        self, training_callback_attributes: TrainingCallbackAttributes
    ) -> List[TrainingCallback]:
        # nerfstudio 1.1.5 asks for callbacks after it loaded the checkpoint: bind the optimizers now.
        self.bind_optimizers(training_callback_attributes.optimizers)
        return super().get_training_callbacks(training_callback_attributes)

    def step_cb(self, optimizers: Optimizers, step):
        self.bind_optimizers(optimizers)
        super().step_cb(optimizers, step)

    def bind_optimizers(self, optimizers: Optimizers) -> None:
        """Make the trainer's optimizers update the Gaussians this model renders."""
        rebound = rebind_optimizers(optimizers.optimizers, self.gauss_params)
        if rebound:
            CONSOLE.log(f"igs2gs: optimizers re-bound to the loaded Gaussians ({', '.join(rebound)})")
        if self.config.fused_adam and (rebound or not getattr(self, "_fused_adam_done", False)):
            use_fused_adam(optimizers.optimizers)
            self._fused_adam_done = True

    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> Dict[str, torch.Tensor]:
        if self.config.ssim_lambda == 0:  # splatfacto would compute the SSIM term and weight it by 0
            loss_dict = loss_without_ssim(self, outputs, batch)
        else:
            loss_dict = super().get_loss_dict(outputs, batch, metrics_dict)
        # With ssim_lambda = 0, splatfacto's main loss is the plain L1 term.
        loss_dict["main_loss"] = self.config.l1_loss_mult * loss_dict["main_loss"]
        if self.config.lpips_loss_mult > 0:
            loss_dict["lpips_loss"] = self.config.lpips_loss_mult * self.lpips_loss(outputs, batch)
        return loss_dict

    def lpips_loss(self, outputs, batch) -> torch.Tensor:
        """LPIPS between the render and the training image, through splatfacto's own LPIPS network."""
        gt = self.composite_with_background(self.get_gt_img(batch["image"]), outputs["background"])
        pred = outputs["rgb"]
        if "mask" in batch:
            mask = self._downscale_if_required(batch["mask"]).to(self.device)
            gt, pred = gt * mask, pred * mask
        return self.graphed_lpips(pred.permute(2, 0, 1)[None], gt.permute(2, 0, 1)[None])

    def get_metrics_dict(self, outputs, batch) -> Dict[str, torch.Tensor]:
        if not self.training or self.config.color_corrected_metrics:
            return super().get_metrics_dict(outputs, batch)
        # splatfacto's metrics with the PSNR computed directly: the torchmetrics module costs ~1 ms of launches.
        gt = self.composite_with_background(self.get_gt_img(batch["image"]), outputs["background"])
        metrics_dict = {"psnr": train_psnr(outputs["rgb"], gt), "gaussian_count": self.num_points}
        self.camera_optimizer.get_metrics_dict(metrics_dict)
        return metrics_dict
