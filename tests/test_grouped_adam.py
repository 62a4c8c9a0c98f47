"""The Gaussians' fused Adam optimizers stepped in one pass (igs2gs/grouped_adam.py), against torch's own step."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch

from igs2gs.grouped_adam import GroupedOptimizers, step_fused_adams

HYPER = [
    {"lr": 1.6e-5, "eps": 1e-15},
    {"lr": 0.0025, "eps": 1e-15, "betas": (0.8, 0.95)},
    {"lr": 0.05, "eps": 1e-8, "weight_decay": 0.01},
    {"lr": 0.001, "eps": 1e-15, "maximize": True},
]


def _optimizers(device: str = "cpu", **extra) -> list:
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(n, 3, device=device)) for n in (7, 5, 9, 4)]
    return [torch.optim.Adam([p], fused=True, **{**h, **extra}) for p, h in zip(params, HYPER)]


def _give_grads(optimizers: list, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    for optimizer in optimizers:
        for p in optimizer.param_groups[0]["params"]:
            p.grad = torch.randn(p.shape, generator=generator).to(p.device)


def _state(optimizers: list) -> list:
    out = []
    for optimizer in optimizers:
        p = optimizer.param_groups[0]["params"][0]
        s = optimizer.state[p]
        out += [p.detach().clone(), s["exp_avg"].clone(), s["exp_avg_sq"].clone(), s["step"].clone()]
    return out


def step_both(device: str) -> None:
    """Step copies of fused Adams with torch's step and with `step_fused_adams`; their states must be equal."""
    ours = _optimizers(device)
    _give_grads(ours, 0)
    for optimizer in ours:
        optimizer.step()  # the first step makes Adam's state (torch's own step)
    torchs = copy.deepcopy(ours)
    for seed in (1, 2, 3):
        _give_grads(ours, seed)
        _give_grads(torchs, seed)
        assert step_fused_adams(ours)
        for optimizer in torchs:
            optimizer.step()
        for mine, theirs in zip(_state(ours), _state(torchs)):
            torch.testing.assert_close(mine, theirs, rtol=0, atol=0)


def test_one_pass_makes_torchs_fused_adam_update_bit_for_bit():
    step_both("cpu")


def _declines(optimizers: list) -> None:
    before = [t.clone() for o in optimizers for t in o.param_groups[0]["params"]]
    assert not step_fused_adams(optimizers)
    after = [t for o in optimizers for t in o.param_groups[0]["params"]]
    assert all(torch.equal(a, b) for a, b in zip(before, after)), "a declined step changes nothing"


@pytest.mark.parametrize(
    "case", ["first step", "amsgrad", "not fused", "another optimizer", "hook", "tensor lr", "mixed dtypes"]
)
def test_it_declines_where_torchs_step_would_differ(case):
    optimizers = _optimizers(amsgrad=True) if case == "amsgrad" else _optimizers()
    if case != "first step":
        _give_grads(optimizers, 0)
        for optimizer in optimizers:
            optimizer.step()
    _give_grads(optimizers, 1)
    if case == "not fused":
        optimizers[1].param_groups[0]["fused"] = False
    elif case == "another optimizer":
        p = torch.nn.Parameter(torch.randn(3))
        p.grad = torch.randn(3)
        optimizers.append(torch.optim.SGD([p], lr=0.1))
    elif case == "hook":
        optimizers[2].register_step_pre_hook(lambda *args: None)
    elif case == "tensor lr":
        optimizers[0].param_groups[0]["lr"] = torch.tensor(0.01)
    elif case == "mixed dtypes":
        p = torch.nn.Parameter(torch.randn(3, dtype=torch.float64))
        p.grad = torch.randn(3, dtype=torch.float64)
        extra = torch.optim.Adam([p], fused=True)
        extra.step()
        p.grad = torch.randn(3, dtype=torch.float64)
        optimizers.append(extra)
    _declines(optimizers)


def _grouped(max_norm=None) -> GroupedOptimizers:
    grouped = GroupedOptimizers.__new__(GroupedOptimizers)
    grouped.optimizers = dict(zip("abcd", _optimizers()))
    grouped.config = {name: {"optimizer": SimpleNamespace(max_norm=max_norm)} for name in "abcd"}
    grouped.parameters = {name: o.param_groups[0]["params"] for name, o in grouped.optimizers.items()}
    _give_grads(list(grouped.optimizers.values()), 0)
    for optimizer in grouped.optimizers.values():
        optimizer.step()
    _give_grads(list(grouped.optimizers.values()), 1)
    return grouped


def test_nerfstudios_optimizers_step_in_one_pass_without_scaler_or_clipping(monkeypatch):
    from torch.amp import GradScaler

    grouped = _grouped()
    calls = []
    monkeypatch.setattr(torch.optim.Adam, "step", lambda self, *a, **k: calls.append(self))
    before = grouped.optimizers["a"].param_groups[0]["params"][0].detach().clone()
    grouped.optimizer_scaler_step_some(GradScaler("cpu", enabled=False), ["a", "c"])
    assert calls == [] and not torch.equal(before, grouped.optimizers["a"].param_groups[0]["params"][0])
    assert grouped.optimizers["b"].state[grouped.parameters["b"][0]]["step"].item() == 1, "only the groups asked"
    grouped.optimizer_scaler_step_all(GradScaler("cpu", enabled=False))
    assert calls == []


def test_clipping_goes_through_nerfstudios_own_step(monkeypatch):
    from torch.amp import GradScaler

    grouped = _grouped(max_norm=1.0)
    calls = []
    monkeypatch.setattr(torch.optim.Adam, "step", lambda self, *a, **k: calls.append(self))
    grouped.optimizer_scaler_step_some(GradScaler("cpu", enabled=False), ["a", "b"])
    assert calls == [grouped.optimizers["a"], grouped.optimizers["b"]]


def test_the_trainer_builds_grouped_optimizers(splatfacto_run, tmp_path, random_lpips_backbones):
    from tests.test_pipeline import make_trainer

    trainer = make_trainer(splatfacto_run, tmp_path)
    assert isinstance(trainer.optimizers, GroupedOptimizers)
    assert set(trainer.optimizers.optimizers) >= {"means", "scales", "quats", "opacities"}
