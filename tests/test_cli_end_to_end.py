"""The whole CLI on CPU, on a tiny generated scene: splatfacto, then igs2gs, then ns-render and ns-export.

`ns-train igs2gs` runs with a tiny random InstructPix2Pix saved as a local diffusers folder; its output
is noise, which is all this test needs: edits must reach the image cache (the checkpoint carries them),
differ from the original photos, and the Gaussians must change.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.lpips_backbones import write_random_lpips_backbones
from tests.scene_factory import make_scene
from tests.tiny_ip2p import save_tiny_ip2p

BIN = Path(sys.executable).parent
SPLATFACTO_STEPS = 200
GS_STEPS = 50  # from the step-199 checkpoint the run resumes at 200; the round starts at 201
EDIT_STEPS = 20  # steps 200..219: one plain step, 10 edits (one per training view), then plain steps


def ns(*args: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    """Run an ns-* console script; fail the test with its output when it fails."""
    result = subprocess.run(
        [str(BIN / args[0]), *args[1:]], env=env, cwd=cwd, capture_output=True, text=True, timeout=1200
    )
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result


def latest_run(root: Path) -> Path:
    configs = sorted(root.rglob("config.yml"), key=lambda p: p.stat().st_mtime)
    assert configs, f"no run under {root}"
    return configs[-1].parent


def load_checkpoint(run: Path) -> dict:
    checkpoints = sorted((run / "nerfstudio_models").glob("step-*.ckpt"))
    assert checkpoints, f"no checkpoint written in {run}"
    return torch.load(checkpoints[-1], map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    scene = make_scene(root / "scene", num_views=11, size=64)  # 10 training views + 1 eval view
    env = {
        **os.environ,
        "TORCH_HOME": str(write_random_lpips_backbones(root / "torch_home")),
        "HF_HUB_OFFLINE": "1",
        "CUDA_VISIBLE_DEVICES": "",
    }
    common = ["--machine.device-type", "cpu", "--vis", "tensorboard"]
    ns("ns-train", "splatfacto", "--data", str(scene), "--output-dir", str(root / "base"),
       "--max-num-iterations", str(SPLATFACTO_STEPS), *common, env=env, cwd=root)  # fmt: skip
    base = latest_run(root / "base")
    ip2p = save_tiny_ip2p(root / "tiny-ip2p")
    edit = ns("ns-train", "igs2gs", "--data", str(scene), "--output-dir", str(root / "edit"),
              "--load-dir", str(base / "nerfstudio_models"), "--max-num-iterations", str(EDIT_STEPS), *common,
              "--pipeline.ip2p-model", str(ip2p), "--pipeline.prompt", "turn it into a \"panda\", please",
              "--pipeline.gs-steps", str(GS_STEPS), env=env, cwd=root)  # fmt: skip
    return {"root": root, "scene": scene, "env": env, "base": base, "edit": latest_run(root / "edit"), "log": edit}


def test_edits_reach_the_cache_and_differ_from_the_photos(runs):
    state = load_checkpoint(runs["edit"])["pipeline"]
    edits = {k: v for k, v in state.items() if k.startswith("igs2gs_edits.view_")}
    assert len(edits) == 10, sorted(edits)
    photos = sorted((runs["scene"] / "images").glob("*.png"))
    for key, edit in edits.items():
        assert edit.dtype == torch.uint8 and edit.shape == (64, 64, 3)
        # training views are all but the eval view chosen by nerfstudio's split; compare with every photo
        differences = [np.abs(edit.numpy().astype(int) - np.asarray(Image.open(p))[..., :3]).mean() for p in photos]
        assert min(differences) > 1.0, f"{key} equals a photo"
    assert state["igs2gs_round"].tolist() == [0, 0, 1]  # the round finished


def test_gaussians_changed_and_a_checkpoint_was_written(runs):
    before = load_checkpoint(runs["base"])
    after = load_checkpoint(runs["edit"])
    assert after["step"] == before["step"] + EDIT_STEPS
    for name in ("means", "features_dc", "opacities"):
        old, new = before["pipeline"][f"_model.gauss_params.{name}"], after["pipeline"][f"_model.gauss_params.{name}"]
        assert old.shape != new.shape or not torch.equal(old, new), f"{name} did not change"


def test_the_round_is_reported(runs):
    assert "round 1 done, 10 views edited" in runs["log"].stdout


def test_render_and_export_work_without_building_the_editor(runs):
    config = runs["edit"] / "config.yml"
    out = runs["root"] / "exports"
    env = {**runs["env"], "HF_HUB_OFFLINE": "1"}
    export = ns("ns-export", "gaussian-splat", "--load-config", str(config), "--output-dir", str(out),
                env=env, cwd=runs["root"])  # fmt: skip
    assert (out / "splat.ply").stat().st_size > 1000
    render = ns("ns-render", "dataset", "--load-config", str(config), "--output-path", str(runs["root"] / "render"),
                "--split", "train", "--rendered-output-names", "rgb", env=env, cwd=runs["root"])  # fmt: skip
    frames = list((runs["root"] / "render").rglob("*.jpg")) + list((runs["root"] / "render").rglob("*.png"))
    assert len(frames) == 10
    for result in (export, render):
        assert "loading InstructPix2Pix" not in result.stdout + result.stderr
