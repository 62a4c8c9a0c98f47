"""The per-view DDIM of `igs2gs/ddim.py` against diffusers' DDIMScheduler (the reference edit's scheduler)."""

from __future__ import annotations

import pytest
import torch

from igs2gs.ddim import add_noise, combine_guidance, ddim_schedule, ddim_step, spread_schedule
from tests.tiny_ip2p import SD15_SCHEDULER_CONFIG


@pytest.fixture
def scheduler():
    from diffusers import DDIMScheduler

    return DDIMScheduler.from_config(SD15_SCHEDULER_CONFIG)


def factors(schedule, k: int) -> tuple[torch.Tensor, ...]:
    return (
        schedule.sqrt_alpha[k],
        schedule.sqrt_one_minus_alpha[k],
        schedule.sqrt_alpha_prev[k],
        schedule.sqrt_one_minus_alpha_prev[k],
    )


@pytest.mark.parametrize("steps", [1, 4, 20])
def test_schedule_timesteps_are_the_schedulers(scheduler, steps: int) -> None:
    Ts = list(range(steps + 1, 1001, 7))
    schedule = ddim_schedule(scheduler, Ts, steps)
    assert schedule.timesteps.shape == (steps, len(Ts)) and schedule.timesteps.dtype == torch.int64
    for view, T in enumerate(Ts):
        with spread_schedule(scheduler, T, steps) as reference:
            assert schedule.timesteps[:, view].tolist() == reference.tolist(), T
    assert scheduler.config.num_train_timesteps == 1000  # restored


@pytest.mark.parametrize("T, steps", [(700, 20), (980, 20), (843, 20), (21, 20), (500, 7), (999, 1)])
@pytest.mark.parametrize("clip", [False, True])
def test_step_equals_scheduler_step_for_one_view(T: int, steps: int, clip: bool) -> None:
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config({**SD15_SCHEDULER_CONFIG, "clip_sample": clip, "clip_sample_range": 1.5})
    g = torch.Generator().manual_seed(T)
    sample = torch.randn(1, 4, 8, 6, generator=g) * 3
    schedule = ddim_schedule(scheduler, [T], steps)
    ours = reference = sample
    with spread_schedule(scheduler, T, steps) as timesteps:
        for k, t in enumerate(timesteps):
            eps = torch.randn(1, 4, 8, 6, generator=g)
            reference = scheduler.step(eps, t, reference, return_dict=False)[0]
            ours = ddim_step(eps, ours, *factors(schedule, k), clip_sample=schedule.clip_sample)
            torch.testing.assert_close(ours, reference, rtol=0, atol=0)  # the same operations on the same floats


def test_step_applies_each_views_own_schedule(scheduler) -> None:
    Ts, steps = [701, 980, 843], 20
    g = torch.Generator().manual_seed(0)
    sample = torch.randn(3, 4, 8, 8, generator=g)
    eps = torch.randn(20, 3, 4, 8, 8, generator=g)
    schedule = ddim_schedule(scheduler, Ts, steps)
    batched = sample
    for k in range(steps):
        batched = ddim_step(eps[k], batched, *factors(schedule, k))
    for view, T in enumerate(Ts):
        single = sample[view : view + 1]
        with spread_schedule(scheduler, T, steps) as timesteps:
            for k, t in enumerate(timesteps):
                single = scheduler.step(eps[k, view : view + 1], t, single, return_dict=False)[0]
        torch.testing.assert_close(batched[view : view + 1], single, rtol=1e-6, atol=1e-6)


def test_add_noise_equals_scheduler_add_noise(scheduler) -> None:
    Ts, steps = [700, 980, 811], 20
    g = torch.Generator().manual_seed(1)
    latents, noise = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    schedule = ddim_schedule(scheduler, Ts, steps)
    ours = add_noise(latents, noise, schedule.sqrt_alpha[0], schedule.sqrt_one_minus_alpha[0])
    reference = scheduler.add_noise(latents, noise, schedule.timesteps[0])
    torch.testing.assert_close(ours, reference, rtol=1e-6, atol=1e-6)


def test_guidance_combines_the_three_branches() -> None:
    g = torch.Generator().manual_seed(2)
    eps = torch.randn(6, 4, 4, 4, generator=g).half()
    text_image, image, none = eps.float().chunk(3)
    expected = none + 12.5 * (text_image - image) + 1.5 * (image - none)
    out = combine_guidance(eps, torch.tensor(12.5), torch.tensor(1.5))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected)


def test_unsupported_scheduler_configs_are_rejected() -> None:
    from diffusers import DDIMScheduler

    for change in ({"prediction_type": "v_prediction"}, {"thresholding": True}):
        scheduler = DDIMScheduler.from_config({**SD15_SCHEDULER_CONFIG, **change})
        with pytest.raises(ValueError, match="supports InstructPix2Pix's epsilon prediction"):
            ddim_schedule(scheduler, [700], 20)
