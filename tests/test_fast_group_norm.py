"""GroupNorm with its statistics from row reductions (igs2gs/fast_group_norm.py) against torch's."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from igs2gs import fast_group_norm
from igs2gs.fast_group_norm import FastGroupNorm, group_norm, use_fast_group_norm, use_torch_group_norm


@pytest.mark.parametrize("shape, groups", [((1, 8, 32, 32), 4), ((3, 12, 16, 8), 3), ((2, 6, 50), 2)])
@pytest.mark.parametrize("affine", [True, False])
def test_the_same_normalisation_as_torch(shape, groups, affine) -> None:
    torch.manual_seed(0)
    x = torch.randn(shape, dtype=torch.float64) * 3 + 0.5
    weight = torch.randn(shape[1], dtype=torch.float64) if affine else None
    bias = torch.randn(shape[1], dtype=torch.float64) if affine else None
    torch.testing.assert_close(group_norm(x, groups, weight, bias, 1e-5), F.group_norm(x, groups, weight, bias, 1e-5))


def test_large_means_lose_no_precision_in_half() -> None:
    torch.manual_seed(0)
    means = torch.tensor([1000.3, 1000.3, -500.2, -500.2, 5.0, 5.0, 0.0, 0.0])[:, None, None]
    x = (torch.randn(1, 8, 64, 64) + means).half()
    weight, bias = (torch.rand(8) + 0.5).half(), torch.randn(8).half()
    reference = F.group_norm(x.double(), 4, weight.double(), bias.double(), 1e-5)  # exact statistics, same input
    fast = group_norm(x, 4, weight, bias, 1e-5)
    assert fast.dtype == torch.float16
    # Within a few float16 steps of outputs of magnitude ~5; dropping the rounded mean's remainder costs ~0.25.
    assert (fast.double() - reference).abs().max() < 0.02


def test_the_module_keeps_its_parameters_and_takes_the_fast_path_only_where_it_pays(monkeypatch) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.GroupNorm(4, 8), nn.SiLU(), nn.Sequential(nn.GroupNorm(2, 8)))
    x = torch.randn(2, 3, 20, 20)
    expected, state = model(x), {k: v.clone() for k, v in model.state_dict().items()}
    assert use_fast_group_norm(model) == 2
    assert all(type(m) is not nn.GroupNorm for m in model.modules())
    assert model.state_dict().keys() == state.keys()
    torch.testing.assert_close(model(x), expected)  # on the CPU: torch's kernel
    calls = []
    monkeypatch.setattr(fast_group_norm, "splits_better", lambda x, groups: True)
    monkeypatch.setattr(fast_group_norm, "group_norm", lambda *args: calls.append(args[1]) or F.group_norm(*args))
    torch.testing.assert_close(model(x), expected)
    assert calls == [4, 2]
    use_torch_group_norm(model)
    assert sum(type(m) is nn.GroupNorm for m in model.modules()) == 2


def test_only_few_long_rows_on_a_gpu_take_the_reductions() -> None:
    x = torch.empty(1, 128, 8, 8)
    assert not fast_group_norm.splits_better(x, 32)  # the CPU
    assert not isinstance(nn.GroupNorm(2, 4), FastGroupNorm)
