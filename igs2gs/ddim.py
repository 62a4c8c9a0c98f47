"""DDIM for a batch of views that each have their own noise level T, as pure tensor functions.

Instruct-GS2GS spreads `steps` DDIM steps over [0, T) with T drawn per edit. diffusers' `DDIMScheduler`
holds one schedule at a time, so a batch of views with different T cannot go through `scheduler.step`.
`ddim_schedule` reads each view's timesteps from the scheduler itself (the same `set_timesteps` call the
reference edit makes) and tabulates the alphas; `add_noise` and `ddim_step` then apply the scheduler's
own formulas (eta = 0, epsilon prediction) per view. For one view they give what `scheduler.add_noise`
and `scheduler.step` give (tests/test_ddim.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Union

import torch
from torch import Tensor


@contextlib.contextmanager
def spread_schedule(scheduler: Any, T: int, steps: int, device: Union[str, torch.device] = "cpu") -> Iterator[Tensor]:
    """Spread `steps` DDIM steps over [0, T) for the duration of the block; yield the timesteps [steps].

    As the original code does, the scheduler is told it was trained on T steps, so both `set_timesteps`
    and `step` (which goes back T // steps each time) work on [0, T), while its betas and alphas stay
    those of the full schedule. The config is restored on exit.
    """
    full = int(scheduler.config.num_train_timesteps)
    if not 0 < steps < T <= full:
        raise ValueError(
            f"need 0 < steps < T <= {full}, got steps={steps}, T={T}; "
            "check EditSettings.lower_bound and diffusion_steps"
        )
    # The original assigned `scheduler.config.num_train_timesteps = T`. On diffusers 0.42 that sets only an
    # attribute of the FrozenDict, leaving its dict entry (what save_config and dict(config) see) at 1000;
    # register_to_config replaces the whole config, so both agree.
    scheduler.register_to_config(num_train_timesteps=int(T))
    try:
        scheduler.set_timesteps(steps, device=device)
        yield scheduler.timesteps
    finally:
        scheduler.register_to_config(num_train_timesteps=full)


def check_scheduler(scheduler: Any) -> None:
    """Raise ValueError unless the scheduler's config is one that `ddim_step` reproduces."""
    config = scheduler.config
    if config.get("prediction_type", "epsilon") != "epsilon" or config.get("thresholding", False):
        raise ValueError(
            f"the DDIM scheduler has prediction_type={config.get('prediction_type')!r}, "
            f"thresholding={config.get('thresholding')!r}; the editor supports InstructPix2Pix's epsilon "
            "prediction without thresholding (build it with DDIMScheduler.from_config of the checkpoint's config)"
        )


@dataclass(frozen=True)
class DDIMSchedule:
    """Per-view DDIM tables of one edit: row k holds step k of every view."""

    timesteps: Tensor  # [S, B] int64: the UNet's timestep of each view at step k
    sqrt_alpha: Tensor  # [S, B] float32: alphas_cumprod[t] ** 0.5
    sqrt_one_minus_alpha: Tensor  # [S, B] float32: (1 - alphas_cumprod[t]) ** 0.5
    sqrt_alpha_prev: Tensor  # [S, B] float32: alpha_prev ** 0.5 (the step's target; final alpha after t < stride)
    sqrt_one_minus_alpha_prev: Tensor  # [S, B] float32: (1 - alpha_prev) ** 0.5
    clip_sample: float  # clamp of the predicted x0 (the scheduler's clip_sample_range), 0 for none

    def to(self, device: Union[str, torch.device]) -> DDIMSchedule:
        """The same tables on `device` (one copy per edit, not one per step)."""
        tables = {name: getattr(self, name).to(device) for name in _TABLES}
        return DDIMSchedule(**tables, clip_sample=self.clip_sample)


_TABLES = ("timesteps", "sqrt_alpha", "sqrt_one_minus_alpha", "sqrt_alpha_prev", "sqrt_one_minus_alpha_prev")


def ddim_schedule(scheduler: Any, Ts: Sequence[int], steps: int) -> DDIMSchedule:
    """The DDIM tables for views with noise levels `Ts`, computed on the CPU in float32 as `scheduler.step` does."""
    check_scheduler(scheduler)
    alphas = scheduler.alphas_cumprod.cpu()
    final = torch.as_tensor(scheduler.final_alpha_cumprod).cpu()
    columns: dict[int, list[Tensor]] = {}
    for T in sorted(set(int(t) for t in Ts)):
        with spread_schedule(scheduler, T, steps) as timesteps:
            t = timesteps.cpu().long()  # [S]
            prev = t - T // steps  # = scheduler.step's prev_timestep while it believes it was trained on T steps
        alpha = alphas[t]
        alpha_prev = torch.where(prev >= 0, alphas[prev.clamp(min=0)], final)
        # The powers are taken in float32 on the CPU like scheduler.step's, so the factors are bitwise its own.
        columns[T] = [t, alpha**0.5, (1 - alpha) ** 0.5, alpha_prev**0.5, (1 - alpha_prev) ** 0.5]
    tables = [torch.stack([columns[int(T)][i] for T in Ts], dim=1) for i in range(len(_TABLES))]
    clip = float(scheduler.config.clip_sample_range) if scheduler.config.get("clip_sample", False) else 0.0
    return DDIMSchedule(*tables, clip_sample=clip)


def _per_view(factor: Tensor, like: Tensor) -> Tensor:
    """[B] factors broadcast over [B, C, H, W]."""
    return factor.to(like.dtype).view(-1, *([1] * (like.ndim - 1)))


def add_noise(latents: Tensor, noise: Tensor, sqrt_alpha: Tensor, sqrt_one_minus_alpha: Tensor) -> Tensor:
    """x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) noise, per view ([B] factors), as `scheduler.add_noise`."""
    return _per_view(sqrt_alpha, latents) * latents + _per_view(sqrt_one_minus_alpha, latents) * noise


def combine_guidance(eps: Tensor, text_scale: Tensor, image_scale: Tensor) -> Tensor:  # [3B, ...] -> [B, ...]
    """eps_none + s_text (eps_text_image - eps_image) + s_img (eps_image - eps_none), branches stacked as [3B]."""
    eps_text_image, eps_image, eps_none = eps.float().chunk(3)
    return eps_none + text_scale * (eps_text_image - eps_image) + image_scale * (eps_image - eps_none)


def ddim_step(
    eps: Tensor,  # [B, C, H, W] float32 guided noise prediction
    sample: Tensor,  # [B, C, H, W] float32 x_t
    sqrt_alpha: Tensor,  # [B]
    sqrt_one_minus_alpha: Tensor,  # [B]
    sqrt_alpha_prev: Tensor,  # [B]
    sqrt_one_minus_alpha_prev: Tensor,  # [B]
    clip_sample: float = 0.0,
) -> Tensor:  # [B, C, H, W] x_prev
    """One deterministic DDIM step (eta = 0) per view, in the order of operations of `DDIMScheduler.step`."""
    x0 = (sample - _per_view(sqrt_one_minus_alpha, sample) * eps) / _per_view(sqrt_alpha, sample)
    if clip_sample > 0:
        x0 = x0.clamp(-clip_sample, clip_sample)
    return _per_view(sqrt_alpha_prev, sample) * x0 + _per_view(sqrt_one_minus_alpha_prev, sample) * eps
