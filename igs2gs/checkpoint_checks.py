"""Find, read and check the checkpoint that `--load-dir` (or `--load-checkpoint`) names, before nerfstudio loads it.

nerfstudio 1.1.5 picks the newest `step-*.ckpt` by parsing every file name in `--load-dir` and
loads it with `torch.load` (weights-only by default on torch >= 2.6). Its failures are raw
tracebacks: an empty folder, a stray file, a nerfacto checkpoint, another scene. These checks turn
each into one message with the fix. Checkpoints are read here with `torch.load(weights_only=True)`,
memory-mapped, so a file that could run code is refused before nerfstudio ever opens it.
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import torch
import yaml

from igs2gs.errors import IGS2GSConfigError

CHECKPOINT_NAME = re.compile(r"^step-(\d+)\.ckpt$")
MEANS_KEY = "_model.gauss_params.means"
POSE_ADJUSTMENT_KEY = "_model.camera_optimizer.pose_adjustment"
EXAMPLE = "--load-dir outputs/<scene>/splatfacto/<run>/nerfstudio_models"


def list_checkpoints(folder: Path) -> Dict[int, Path]:
    """The `step-N.ckpt` files of `folder` by step."""
    found = {}
    for path in folder.iterdir():
        match = CHECKPOINT_NAME.match(path.name)
        if match and path.is_file():
            found[int(match.group(1))] = path
    return found


def find_checkpoint(load_dir: Optional[Path], load_step: Optional[int], load_checkpoint: Optional[Path]) -> Path:
    """The checkpoint file nerfstudio will load (`--load-dir` wins, as in nerfstudio); raise when there is none."""
    if load_dir is None and load_checkpoint is not None:
        path = Path(load_checkpoint)
        if not path.is_file():
            raise IGS2GSConfigError(
                f"--load-checkpoint {str(path)!r} is not a file; pass a step-*.ckpt file or {EXAMPLE}"
            )
        return path
    if load_dir is None:
        raise IGS2GSConfigError(
            f"--load-dir is missing: igs2gs edits a trained splatfacto scene, so pass its checkpoint folder, e.g. "
            f"{EXAMPLE} (train one first with ns-train splatfacto --data <scene>)"
        )
    load_dir = Path(load_dir)
    if not load_dir.exists():
        raise IGS2GSConfigError(
            f"--load-dir {str(load_dir)!r} does not exist; pass a run's checkpoint folder, e.g. {EXAMPLE}"
        )
    if load_dir.is_file():
        raise IGS2GSConfigError(
            f"--load-dir {str(load_dir)!r} is a file; pass the folder that holds it "
            f"(--load-dir {str(load_dir.parent)!r}) or the file itself with --load-checkpoint"
        )
    checkpoints = list_checkpoints(load_dir)
    if not checkpoints:
        nested = load_dir / "nerfstudio_models"
        hint = (
            f"; did you mean --load-dir {str(nested)!r}?"
            if nested.is_dir() and list_checkpoints(nested)
            else f" (a run writes them every --steps-per-save steps), e.g. {EXAMPLE}"
        )
        raise IGS2GSConfigError(f"--load-dir {str(load_dir)!r} holds no checkpoint (step-*.ckpt){hint}")
    step = max(checkpoints) if load_step is None else load_step
    if step not in checkpoints:
        steps = ", ".join(str(s) for s in sorted(checkpoints))
        raise IGS2GSConfigError(f"--load-step {step} has no checkpoint in {str(load_dir)!r}; it holds steps {steps}")
    return checkpoints[step]


def read_checkpoint(path: Path) -> Dict[str, Any]:
    """`torch.load(path, weights_only=True)`, memory-mapped (tensors are read only when touched)."""
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err):
                raise
            state = torch.load(path, map_location="cpu", weights_only=True)  # a legacy (non-zip) checkpoint
    except pickle.UnpicklingError as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise IGS2GSConfigError(
            f"{str(path)!r} holds Python objects that a safe (weights-only) load refuses: {reason}\n"
            "igs2gs reads checkpoints only with torch.load(weights_only=True), which cannot run code from the file; "
            "nerfstudio's own checkpoints load that way. Do not set TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD for files you "
            "did not write."
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise IGS2GSConfigError(
            f"{str(path)!r} cannot be read as a checkpoint ({type(err).__name__}: {err}); it may be truncated by a run "
            "killed while saving: pass --load-step of another checkpoint, or the folder of another run"
        ) from None
    if not isinstance(state, dict) or not isinstance(state.get("pipeline"), Mapping) or "step" not in state:
        raise IGS2GSConfigError(f"{str(path)!r} is not a nerfstudio checkpoint (no 'pipeline' and 'step'); {EXAMPLE}")
    return state


def check_splatfacto_checkpoint(state: Mapping[str, Any], path: Path) -> None:
    """Raise `IGS2GSConfigError` unless the checkpoint holds splatfacto's Gaussians."""
    if MEANS_KEY in state["pipeline"]:
        return
    method = run_method_name(path.parent.parent)
    what = f"a {method} checkpoint" if method else "not a splatfacto checkpoint"
    raise IGS2GSConfigError(
        f"{str(path)!r} is {what}: it holds no Gaussians ({MEANS_KEY}). igs2gs edits a 3D Gaussian Splatting scene: "
        f"train one with ns-train splatfacto --data <scene> and pass {EXAMPLE}"
    )


def check_checkpoint_matches_scene(pipeline_state: Mapping[str, Any], num_views: int, edit_prefix: str) -> None:
    """Raise `IGS2GSConfigError` when the checkpoint knows more (or other) training cameras than `--data` has."""
    fix = "is --data the scene this checkpoint was trained on (and with the same dataparser options)?"
    poses = pipeline_state.get(POSE_ADJUSTMENT_KEY)
    if poses is not None and poses.shape[0] != num_views:
        raise IGS2GSConfigError(
            f"the checkpoint optimises the poses of {poses.shape[0]} training cameras, but --data has {num_views} "
            f"training views: {fix}"
        )
    edited = sorted(int(key[len(edit_prefix) :]) for key in pipeline_state if key.startswith(edit_prefix))
    if edited and edited[-1] >= num_views:
        raise IGS2GSConfigError(
            f"the checkpoint holds an edit of training view {edited[-1]}, but --data has {num_views} training "
            f"views: {fix}"
        )


def check_same_placement(run_dir: Path, transform: torch.Tensor, scale: float) -> None:
    """Raise `IGS2GSConfigError` when the checkpoint's run placed its scene otherwise than `--data` does now.

    `run_dir/dataparser_transforms.json` holds the transform and scale nerfstudio derived from that run's camera
    poses; the same scene and dataparser options give the same numbers. A missing file is not an error.
    """
    saved_file = run_dir / "dataparser_transforms.json"
    if not saved_file.exists():
        return
    try:
        saved = json.loads(saved_file.read_text())
        saved_transform, saved_scale = torch.tensor(saved["transform"], dtype=torch.float32), float(saved["scale"])
    except (ValueError, KeyError, TypeError):
        return
    transform = transform.detach().float().cpu()
    if (
        saved_transform.shape == transform.shape
        and torch.allclose(saved_transform, transform, atol=1e-4)
        and abs(saved_scale - scale) <= 1e-4 * max(1.0, abs(scale))
    ):
        return
    raise IGS2GSConfigError(
        f"the checkpoint's run placed its scene with another transform than --data gives now ({str(saved_file)!r} "
        f"has scale {saved_scale:g}, --data gives {scale:g}): is --data the scene this checkpoint was trained on, "
        "with the same dataparser options (orientation, centering, scale)?"
    )


def run_method_name(run_dir: Path) -> Optional[str]:
    """The `method_name` in a run's config.yml, read without constructing any of its Python objects."""
    config_file = run_dir / "config.yml"
    if not config_file.is_file():
        return None
    try:
        config = yaml.load(config_file.read_text(), Loader=_InertLoader)  # noqa: S506 (inert: builds plain data)
    except yaml.YAMLError:
        return None
    name = config.get("method_name") if isinstance(config, dict) else None
    return name if isinstance(name, str) else None


class _InertLoader(yaml.SafeLoader):
    """A safe YAML loader that reads nerfstudio's `!!python/...` tags as plain mappings, lists and strings."""


def _construct_plain(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)


_InertLoader.add_multi_constructor("tag:yaml.org,2002:python/", _construct_plain)


def checkpoint_step(path: Path) -> Optional[int]:
    """The step in a `step-N.ckpt` file name (None for another name)."""
    match = CHECKPOINT_NAME.match(path.name)
    return int(match.group(1)) if match else None
