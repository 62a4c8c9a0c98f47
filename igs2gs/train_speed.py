"""Cheaper splatfacto training steps that compute the same update.

A plain igs2gs step on a GPU is bound by the CPU launching work, not by the GPU (NOTES.md: 11.8 ms per
step, 0.8 ms of which is the render), so these cut launches and host-device synchronisations:

- `use_fused_adam`: torch's fused Adam kernel, one launch per parameter tensor instead of about ten
  (the same update; torch documents the fused and foreach paths as the same algorithm).
- `train_psnr`: the training PSNR without torchmetrics' module (which updates running state no one reads);
- `loss_without_ssim`: splatfacto computes an SSIM term (forward and backward) even when its weight
  `ssim_lambda` is 0, as it is for igs2gs; the loss is the same without it.

The camera's host-device synchronisations (width and height read with `.item()`, the intrinsics built on the
CPU, a rescale by 1) are gone too: see step_cameras.py; the Adam steps' Python: grouped_adam.py.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping

import torch


@torch.no_grad()
def use_fused_adam(optimizers: Mapping[str, torch.optim.Optimizer], device_type: str = "cuda") -> List[str]:
    """Switch every `torch.optim.Adam` whose parameters all live on `device_type` to the fused kernel, keeping
    its state (the step counts move to the parameters' device, where the fused kernel reads them). Returns
    the names switched now."""
    switched = []
    for name, optimizer in optimizers.items():
        if type(optimizer) is not torch.optim.Adam:
            continue
        params = [p for group in optimizer.param_groups for p in group["params"]]
        if not params or any(p.device.type != device_type or not p.is_floating_point() for p in params):
            continue
        if all(group.get("fused") for group in optimizer.param_groups):
            continue
        for group in optimizer.param_groups:
            group["fused"], group["foreach"] = True, False  # fused and foreach exclude each other
        for p in params:
            state = optimizer.state.get(p)
            if state and "step" in state:
                state["step"] = torch.as_tensor(state["step"], dtype=torch.float32).to(p.device)
        optimizer._step_supports_amp_scaling = True  # as Adam(fused=True) sets it
        switched.append(name)
    return switched


@torch.no_grad()
def train_psnr(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """PSNR of images in [0, 1], as torchmetrics' `PeakSignalNoiseRatio(data_range=1.0)` computes it for one
    batch."""
    return 10 * torch.log10(1.0 / torch.mean((pred.float() - gt.float()) ** 2))


def loss_without_ssim(model: Any, outputs: Dict[str, torch.Tensor], batch: Dict[str, Any]) -> Dict[str, torch.Tensor]:
    """`SplatfactoModel.get_loss_dict` for `ssim_lambda == 0`: the same terms, without computing the SSIM that
    the main loss weights by 0 (nerfstudio 1.1.5, models/splatfacto.py)."""
    assert model.config.ssim_lambda == 0, f"loss_without_ssim needs ssim_lambda 0, got {model.config.ssim_lambda}"
    gt_img = model.composite_with_background(model.get_gt_img(batch["image"]), outputs["background"])
    pred_img = outputs["rgb"]
    if "mask" in batch:
        mask = model._downscale_if_required(batch["mask"]).to(model.device)
        gt_img, pred_img = gt_img * mask, pred_img * mask
    main_loss = torch.abs(gt_img - pred_img).mean()
    if model.config.use_scale_regularization and model.step % 10 == 0:
        scale_exp = torch.exp(model.scales)
        ratio = scale_exp.amax(dim=-1) / scale_exp.amin(dim=-1)
        max_ratio = model.config.max_gauss_ratio
        scale_reg = 0.1 * (torch.maximum(ratio, torch.tensor(max_ratio)) - max_ratio).mean()
    else:
        scale_reg = torch.tensor(0.0).to(model.device)
    loss_dict = {"main_loss": main_loss, "scale_reg": scale_reg}
    if model.training:
        model.camera_optimizer.get_loss_dict(loss_dict)
        if model.config.use_bilateral_grid:
            from nerfstudio.model_components.lib_bilagrid import total_variation_loss

            loss_dict["tv_loss"] = 10 * total_variation_loss(model.bil_grids.grids)
    return loss_dict
