"""The whole CLI on CPU, on a tiny generated scene: splatfacto, then igs2gs, then ns-render and ns-export.

`ns-train igs2gs` runs with a tiny random InstructPix2Pix saved as a local diffusers folder; its output
is noise, which is all this test needs: edits must reach the image cache (the checkpoint carries them),
differ from the original photos, and the Gaussians must change.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import latest_run, load_latest_checkpoint, run_ns
from tests.tiny_ip2p import save_tiny_ip2p

GS_STEPS = 50  # the step-199 checkpoint resumes at 200; the round starts at 201
EDIT_STEPS = 20  # steps 200..219: one plain step, 10 edits (one per training view), then plain steps


@pytest.fixture(scope="module")
def edit_run(splatfacto_run):
    root = splatfacto_run["root"]
    ip2p = save_tiny_ip2p(root / "tiny-ip2p")
    result = run_ns(
        "ns-train", "igs2gs", "--data", str(splatfacto_run["scene"]), "--output-dir", str(root / "edit"),
        "--load-dir", str(splatfacto_run["run"] / "nerfstudio_models"), "--max-num-iterations", str(EDIT_STEPS),
        "--machine.device-type", "cpu", "--vis", "tensorboard", "--pipeline.ip2p-model", str(ip2p),
        "--pipeline.prompt", 'turn it into a "panda", please', "--pipeline.gs-steps", str(GS_STEPS),
        env=splatfacto_run["env"], cwd=root,
    )  # fmt: skip
    return {"run": latest_run(root / "edit"), "log": result.stdout + result.stderr}


def test_edits_reach_the_cache_and_differ_from_the_photos(edit_run, splatfacto_run):
    state = load_latest_checkpoint(edit_run["run"])["pipeline"]
    edits = {k: v for k, v in state.items() if k.startswith("igs2gs_edits.view_")}
    assert len(edits) == 10, sorted(edits)
    photos = [np.asarray(Image.open(p), dtype=int)[..., :3] for p in splatfacto_run["photos"]]
    for key, edit in edits.items():
        assert edit.dtype == torch.uint8 and edit.shape == (64, 64, 3)
        differences = [np.abs(edit.numpy().astype(int) - photo).mean() for photo in photos]
        assert min(differences) > 1.0, f"{key} equals a photo"
    assert state["igs2gs_round"].tolist() == [0, 0, 1]  # the round finished


def test_gaussians_changed_and_a_checkpoint_was_written(edit_run, splatfacto_run):
    before = splatfacto_run["checkpoint"]
    after = load_latest_checkpoint(edit_run["run"])
    assert after["step"] == before["step"] + EDIT_STEPS
    for name in ("means", "features_dc", "opacities"):
        old, new = before["pipeline"][f"_model.gauss_params.{name}"], after["pipeline"][f"_model.gauss_params.{name}"]
        assert old.shape != new.shape or not torch.equal(old, new), f"{name} did not change"


def test_the_round_is_reported_and_the_prompt_survives_quoting(edit_run):
    assert "round 1 done, 10 views edited" in edit_run["log"]
    config = (edit_run["run"] / "config.yml").read_text()
    assert 'turn it into a "panda", please' in config or 'turn it into a \\"panda\\", please' in config


def test_render_and_export_work_without_building_the_editor(edit_run, splatfacto_run):
    root, env = splatfacto_run["root"], splatfacto_run["env"]
    config = edit_run["run"] / "config.yml"
    export = run_ns("ns-export", "gaussian-splat", "--load-config", str(config), "--output-dir", str(root / "exports"),
                    env=env, cwd=root)  # fmt: skip
    assert (root / "exports" / "splat.ply").stat().st_size > 1000
    render = run_ns("ns-render", "dataset", "--load-config", str(config), "--output-path", str(root / "render"),
                    "--split", "train", "--rendered-output-names", "rgb", env=env, cwd=root)  # fmt: skip
    frames = list((root / "render").rglob("*.jpg")) + list((root / "render").rglob("*.png"))
    assert len(frames) == 10
    for result in (export, render):
        assert "loading InstructPix2Pix" not in result.stdout + result.stderr
