"""Shared pytest fixtures."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
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


@pytest.fixture(scope="session")
def splatfacto_run(tmp_path_factory: pytest.TempPathFactory, _random_lpips_torch_home: Path) -> dict:
    """`ns-train splatfacto` (the real CLI, on CPU) for 200 steps on a generated 11-view 64 px scene.

    Returns the scene folder, the run folder, its photos, the loaded checkpoint (step 199: inside
    splatfacto's densification window and resolution schedule) and the environment the CLI ran with.
    """
    from tests.scene_factory import make_scene

    root = tmp_path_factory.mktemp("splatfacto")
    scene = make_scene(root / "scene", num_views=11, size=64)  # nerfstudio splits 10 training + 1 eval view
    env = {**os.environ, "TORCH_HOME": str(_random_lpips_torch_home), "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    run_ns(
        "ns-train", "splatfacto", "--data", str(scene), "--output-dir", str(root / "base"),
        "--max-num-iterations", str(SPLATFACTO_STEPS), "--machine.device-type", "cpu", "--vis", "tensorboard",
        env=env, cwd=root,
    )  # fmt: skip
    run = latest_run(root / "base")
    return {
        "root": root,
        "scene": scene,
        "run": run,
        "env": env,
        "photos": sorted((scene / "images").glob("*.png")),
        "checkpoint": load_latest_checkpoint(run),
    }


SPLATFACTO_STEPS = 200
NS_BIN = Path(sys.executable).parent


def run_ns(*args: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    """Run an ns-* console script of this environment; fail the test with its output when it fails."""
    script = NS_BIN / args[0]
    if not script.exists():  # installed elsewhere on PATH (the GPU machine's bundle)
        script = Path(shutil.which(args[0]) or script)
    result = subprocess.run([str(script), *args[1:]], env=env, cwd=cwd, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result


def latest_run(root: Path) -> Path:
    """The run folder (holding config.yml) written last under `root`."""
    configs = sorted(root.rglob("config.yml"), key=lambda p: p.stat().st_mtime)
    assert configs, f"no run under {root}"
    return configs[-1].parent


def load_latest_checkpoint(run: Path) -> dict:
    """The newest checkpoint of a run, loaded as nerfstudio does on torch >= 2.6 (weights only)."""
    from igs2gs.checkpoint_compat import allow_numpy_scalars_in_checkpoints

    allow_numpy_scalars_in_checkpoints()
    checkpoints = sorted((run / "nerfstudio_models").glob("step-*.ckpt"))
    assert checkpoints, f"no checkpoint written in {run}"
    return torch.load(checkpoints[-1], map_location="cpu", weights_only=True)
