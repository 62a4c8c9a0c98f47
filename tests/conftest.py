"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

# torchvision's ImageNet AlexNet, which LPIPS (torchmetrics and lpips) loads from torch hub's checkpoint folder.
ALEXNET_CHECKPOINT = "alexnet-owt-7be5be79.pth"


@pytest.fixture(scope="session")
def _random_lpips_torch_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TORCH_HOME holding a random-weight AlexNet checkpoint, written once per session (about 240 MB)."""
    import torchvision

    torch_home = tmp_path_factory.mktemp("torch_home")
    checkpoints = torch_home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet().state_dict(), checkpoints / ALEXNET_CHECKPOINT)
    torch.random.set_rng_state(generator_state)
    return torch_home


@pytest.fixture
def random_lpips_backbones(_random_lpips_torch_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point TORCH_HOME at random AlexNet weights so LPIPS (e.g. in SplatfactoModel) builds with no network.

    The weights are random: LPIPS values are meaningless, only the plumbing runs. Returns the TORCH_HOME folder.
    """
    monkeypatch.setenv("TORCH_HOME", str(_random_lpips_torch_home))
    return _random_lpips_torch_home
