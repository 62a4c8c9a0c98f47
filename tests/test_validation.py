"""Every bad input gets one message that names the fix, never a raw traceback.

The errors are `SystemExit`s (`igs2gs.errors`): `ns-train` prints their message and exits with status 1.
Most cases run in-process; a few go through the real CLI to show what the user sees.
"""

from __future__ import annotations

import copy
import math
import subprocess
from pathlib import Path
from typing import Any, Dict

import pytest
import torch

from igs2gs.checkpoint_checks import read_checkpoint
from igs2gs.errors import IGS2GSConfigError
from igs2gs.igs2gs_config import igs2gs_method
from igs2gs.igs2gs_pipeline import IGS2GSPipelineConfig
from igs2gs.trainer_config import prepare_run
from igs2gs.validation import check_ip2p_device, check_pipeline_options, input_warnings
from tests.conftest import NS_BIN
from tests.test_resume import build_trainer


def trainer_config(splatfacto_run: dict, **fields: Any):
    config = copy.deepcopy(igs2gs_method.config)
    config.machine.device_type = "cpu"
    config.pipeline.datamanager.data = splatfacto_run["scene"]
    config.load_dir = splatfacto_run["run"] / "nerfstudio_models"
    for name, value in fields.items():
        setattr(config, name, value)
    return config


def message_of(config) -> str:
    with pytest.raises(IGS2GSConfigError) as raised:
        prepare_run(config)
    return raised.value.message


def save_run(folder: Path, pipeline_state: Dict[str, Any], method: str = "splatfacto", step: int = 199) -> Path:
    """A run folder with config.yml and one checkpoint holding `pipeline_state`; returns its nerfstudio_models."""
    models = folder / "nerfstudio_models"
    models.mkdir(parents=True)
    header = "!!python/object:nerfstudio.engine.trainer.TrainerConfig"
    (folder / "config.yml").write_text(f"{header}\nmethod_name: {method}\n")
    checkpoint = {"step": step, "pipeline": pipeline_state, "optimizers": {}, "schedulers": {}, "scalers": {}}
    torch.save(checkpoint, models / f"step-{step:09d}.ckpt")
    return models


# ---------------------------------------------------------------- --load-dir and --data, before the trainer is built


def test_a_missing_load_dir_asks_for_the_splatfacto_run(splatfacto_run):
    message = message_of(trainer_config(splatfacto_run, load_dir=None))
    assert "--load-dir is missing" in message and "splatfacto/<run>/nerfstudio_models" in message


def test_a_load_dir_that_does_not_exist(splatfacto_run, tmp_path):
    assert "does not exist" in message_of(trainer_config(splatfacto_run, load_dir=tmp_path / "nope"))


def test_an_empty_load_dir_and_a_run_folder_instead_of_its_checkpoints(splatfacto_run, tmp_path):
    assert "holds no checkpoint (step-*.ckpt)" in message_of(trainer_config(splatfacto_run, load_dir=tmp_path))
    message = message_of(trainer_config(splatfacto_run, load_dir=splatfacto_run["run"]))
    assert f"did you mean --load-dir '{splatfacto_run['run'] / 'nerfstudio_models'}'" in message


def test_a_missing_load_step_lists_the_steps_there_are(splatfacto_run):
    assert "it holds steps 199" in message_of(trainer_config(splatfacto_run, load_step=5))


def test_the_newest_checkpoint_is_chosen_despite_other_files(splatfacto_run, tmp_path):
    models = tmp_path / "nerfstudio_models"
    models.mkdir()
    (models / "step-000000199.ckpt").symlink_to(splatfacto_run["run"] / "nerfstudio_models" / "step-000000199.ckpt")
    (models / ".DS_Store").write_text("")  # nerfstudio's own search would fail on this name
    config = trainer_config(splatfacto_run, load_dir=models)
    prepare_run(config)
    assert config.load_step == 199 and config.load_scheduler is False


def test_a_nerfacto_checkpoint_is_not_a_splatfacto_checkpoint(splatfacto_run, tmp_path):
    models = save_run(tmp_path / "nerfacto", {"_model.field.mlp_base.params": torch.zeros(4)}, method="nerfacto")
    message = message_of(trainer_config(splatfacto_run, load_dir=models))
    assert "is a nerfacto checkpoint: it holds no Gaussians (_model.gauss_params.means)" in message
    assert "ns-train splatfacto" in message


def test_a_checkpoint_that_would_run_code_is_refused_unread(splatfacto_run, tmp_path):
    marker = tmp_path / "ran"
    models = save_run(tmp_path / "evil", {"x": _RunsCode(str(marker))})
    message = message_of(trainer_config(splatfacto_run, load_dir=models))
    assert "holds Python objects that a safe (weights-only) load refuses" in message
    assert not marker.exists()


class _RunsCode:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_a_truncated_checkpoint(splatfacto_run, tmp_path):
    models = save_run(tmp_path / "cut", {"_model.gauss_params.means": torch.zeros(3, 3)})
    checkpoint = next(models.glob("*.ckpt"))
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])
    assert "cannot be read as a checkpoint" in message_of(trainer_config(splatfacto_run, load_dir=models))


def test_missing_data(splatfacto_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no transforms.json here, so the dataparser's default "." is no scene
    config = trainer_config(splatfacto_run)
    config.pipeline.datamanager.data = None
    assert "--data is missing" in message_of(config)
    config.pipeline.datamanager.data = tmp_path / "nope"
    assert "does not exist" in message_of(config)
    config.pipeline.datamanager.data = tmp_path
    assert "holds no transforms.json" in message_of(config)


def test_a_cuda_training_device_on_a_machine_without_cuda(splatfacto_run, monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    config = trainer_config(splatfacto_run)
    config.machine.device_type = "cuda"
    assert "--machine.device-type 'cuda' asks for a CUDA GPU" in message_of(config)


# ---------------------------------------------------------------- pipeline options, checked when the pipeline is built


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("guidance_scale", 0.0, "--pipeline.guidance-scale must be a finite number > 0, got 0.0"),
        ("guidance_scale", -2.0, "--pipeline.guidance-scale must be a finite number > 0, got -2.0"),
        ("guidance_scale", math.nan, "--pipeline.guidance-scale must be a finite number > 0, got nan"),
        ("image_guidance_scale", 0.0, "--pipeline.image-guidance-scale must be a finite number > 0"),
        ("lower_bound", 0.0, "must lie in (0, 1], got 0.0 and 0.98"),
        ("upper_bound", 1.5, "must lie in (0, 1], got 0.7 and 1.5"),
        ("lower_bound", 0.99, "--pipeline.lower-bound (0.99) is above --pipeline.upper-bound (0.98)"),
        ("diffusion_steps", 0, "--pipeline.diffusion-steps must be an integer >= 1, got 0"),
        ("gs_steps", 0, "--pipeline.gs-steps must be an integer >= 1, got 0"),
        ("diffusion_steps", 800, "too few for --pipeline.diffusion-steps 800"),
        ("edit_max_side", -1, "--pipeline.edit-max-side must be 0 (edit at full size) or an integer >= 8"),
        ("seed", -1, "--pipeline.seed must be an integer >= 0"),
        ("ip2p_device", "gpu", "--pipeline.ip2p-device 'gpu' is not a torch device"),
    ],
)
def test_pipeline_options(option, value, expected):
    config = IGS2GSPipelineConfig()
    setattr(config, option, value)
    with pytest.raises(IGS2GSConfigError) as raised:
        check_pipeline_options(config)
    assert expected in raised.value.message


def test_the_defaults_pass():
    check_pipeline_options(IGS2GSPipelineConfig())


def test_an_ip2p_gpu_that_is_not_there(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(IGS2GSConfigError, match="asks for a CUDA GPU, but torch finds none"):
        check_ip2p_device("cuda")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(IGS2GSConfigError) as raised:
        check_ip2p_device("cuda:3")
    assert "'cuda:3' names GPU 3, but this machine has 1 CUDA device (cuda:0)" in raised.value.message
    check_ip2p_device("cuda:0")
    check_ip2p_device(None)


def test_warnings_for_an_empty_prompt_odd_sides_and_large_views():
    lines = input_warnings("  ", [(511, 340), (512, 512)], edit_max_side=512)
    assert len(lines) == 2 and "--pipeline.prompt is empty" in lines[0]
    assert "1 of 2 training views have sides that are not multiples of 8 (e.g. 340 x 511 px)" in lines[1]
    lines = input_warnings("make it snow", [(1080, 1920)], edit_max_side=512)
    assert len(lines) == 1 and "--pipeline.edit-max-side 512" in lines[0] and "1920 x 1080" in lines[0]
    assert "full size" in input_warnings("make it snow", [(1080, 1920)], edit_max_side=0)[0]
    assert input_warnings("make it snow", [(512, 384)], edit_max_side=512) == []


def test_bad_options_fail_when_the_pipeline_is_built(splatfacto_run, tmp_path):
    config = trainer_config(splatfacto_run, output_dir=tmp_path, vis="tensorboard")
    config.pipeline.guidance_scale = -1.0
    trainer = config.setup(local_rank=0, world_size=1)
    with pytest.raises(IGS2GSConfigError, match="--pipeline.guidance-scale must be a finite number > 0"):
        trainer.setup()


# ---------------------------------------------------------------- a checkpoint of another scene, when it is loaded


def test_a_checkpoint_of_another_scene(splatfacto_run, tmp_path, random_lpips_backbones):
    state = dict(splatfacto_run["checkpoint"]["pipeline"])
    state["_model.camera_optimizer.pose_adjustment"] = torch.zeros(7, 6)
    models = save_run(tmp_path / "seven", state)
    with pytest.raises(IGS2GSConfigError) as raised:
        build_trainer(splatfacto_run, tmp_path, "other", iterations=1, load_dir=models)
    assert "the checkpoint optimises the poses of 7 training cameras, but --data has 10" in raised.value.message

    state = dict(splatfacto_run["checkpoint"]["pipeline"])
    state["igs2gs_edits.view_00012"] = torch.zeros(64, 64, 3, dtype=torch.uint8)
    models = save_run(tmp_path / "edited", state)
    with pytest.raises(IGS2GSConfigError, match="an edit of training view 12, but --data has 10 training views"):
        build_trainer(splatfacto_run, tmp_path, "other", iterations=1, load_dir=models)


def test_a_checkpoint_placed_otherwise(splatfacto_run, tmp_path, random_lpips_backbones):
    models = save_run(tmp_path / "moved", dict(splatfacto_run["checkpoint"]["pipeline"]))
    (models.parent / "dataparser_transforms.json").write_text(
        '{"transform": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]], "scale": 3.5}'
    )
    with pytest.raises(IGS2GSConfigError, match="placed its scene with another transform than --data gives now"):
        build_trainer(splatfacto_run, tmp_path, "moved", iterations=1, load_dir=models)


# ---------------------------------------------------------------- what the user sees: the real CLI


def ns_train_fails(splatfacto_run: dict, *args: str, env: Dict[str, str] | None = None) -> str:
    """Run `ns-train igs2gs` on the tiny scene; assert it fails without a traceback; return its stderr."""
    root = splatfacto_run["root"]
    command = [str(NS_BIN / "ns-train"), "igs2gs", "--data", str(splatfacto_run["scene"]),
               "--output-dir", str(root / "bad-inputs"), "--machine.device-type", "cpu", "--vis", "tensorboard",
               "--pipeline.gs-steps", "50", "--max-num-iterations", "3", *args]  # fmt: skip
    result = subprocess.run(command, env={**splatfacto_run["env"], **(env or {})}, cwd=root,
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode != 0, result.stdout[-2000:]
    assert "Traceback" not in result.stdout + result.stderr, result.stderr[-3000:]
    return result.stderr


def test_cli_an_empty_load_dir(splatfacto_run, tmp_path):
    stderr = ns_train_fails(splatfacto_run, "--load-dir", str(tmp_path))
    assert f"igs2gs: --load-dir '{tmp_path}' holds no checkpoint (step-*.ckpt)" in stderr


def test_cli_a_bad_guidance_scale(splatfacto_run):
    models = splatfacto_run["run"] / "nerfstudio_models"
    stderr = ns_train_fails(splatfacto_run, "--load-dir", str(models), "--pipeline.guidance-scale", "-1")
    assert "igs2gs: --pipeline.guidance-scale must be a finite number > 0, got -1.0" in stderr


def test_cli_weights_unreachable_offline(splatfacto_run, tmp_path):
    models = splatfacto_run["run"] / "nerfstudio_models"
    # an empty hub cache and no network: the first edit (step 201) cannot load InstructPix2Pix
    offline = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    stderr = ns_train_fails(splatfacto_run, "--load-dir", str(models), env=offline)
    assert "igs2gs: Could not load the InstructPix2Pix" in stderr and "hf download timbrooks/instruct-pix2pix" in stderr


def test_read_checkpoint_is_weights_only(splatfacto_run):
    state = read_checkpoint(next((splatfacto_run["run"] / "nerfstudio_models").glob("*.ckpt")))
    assert "_model.gauss_params.means" in state["pipeline"]
