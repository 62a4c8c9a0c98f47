"""Checks of the method's options, its scene folder and its devices, with messages that name the fix.

Each `check_*` raises `IGS2GSConfigError` (printed by `ns-train` without a traceback); each
`*_warnings` returns the lines to announce and lets the run go on. They are called where the values
are used: the pipeline checks its options when it is built (`IGS2GSPipeline.__init__`), the trainer
config checks `--data` and the devices before it builds the trainer (`IGS2GSTrainerConfig.setup`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, List, Optional, Tuple

import torch
from nerfstudio.utils.rich_utils import CONSOLE

from igs2gs.errors import IGS2GSConfigError

if TYPE_CHECKING:
    from nerfstudio.cameras.cameras import Cameras

    from igs2gs.igs2gs_pipeline import IGS2GSPipelineConfig

NUM_TRAIN_TIMESTEPS = 1000
"""Diffusion timesteps of InstructPix2Pix's scheduler (SD 1.5); T is drawn in [lower, upper] x this."""

BEST_EDIT_SIDE = 512
"""InstructPix2Pix was trained at 512 px: larger edits degrade and need much more memory."""


def check_pipeline_options(config: IGS2GSPipelineConfig) -> None:
    """Raise `IGS2GSConfigError` for an option of the pipeline that no edit could use."""
    for option, value, paper in (
        ("guidance-scale", config.guidance_scale, 12.5),
        ("image-guidance-scale", config.image_guidance_scale, 1.5),
    ):
        if not _is_number(value) or not 0 < value < math.inf:
            raise IGS2GSConfigError(
                f"--pipeline.{option} must be a finite number > 0, got {value!r} (the paper: {paper})"
            )
    lower, upper = config.lower_bound, config.upper_bound
    if not (_is_number(lower) and _is_number(upper) and 0 < lower <= 1 and 0 < upper <= 1):
        raise IGS2GSConfigError(
            f"--pipeline.lower-bound and --pipeline.upper-bound are fractions of the {NUM_TRAIN_TIMESTEPS} diffusion "
            f"timesteps and must lie in (0, 1], got {lower!r} and {upper!r} (the paper: 0.70 and 0.98)"
        )
    if lower > upper:
        raise IGS2GSConfigError(
            f"--pipeline.lower-bound ({lower!r}) is above --pipeline.upper-bound ({upper!r}); the noise level T is "
            "drawn between them, so pass lower <= upper (the paper: 0.70 and 0.98)"
        )
    for option, value, paper in (("diffusion-steps", config.diffusion_steps, 20), ("gs-steps", config.gs_steps, 2500)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise IGS2GSConfigError(f"--pipeline.{option} must be an integer >= 1, got {value!r} (the paper: {paper})")
    lowest_T = int(lower * NUM_TRAIN_TIMESTEPS)
    if lowest_T <= config.diffusion_steps:
        raise IGS2GSConfigError(
            f"--pipeline.lower-bound {lower!r} lets the noise level drop to {lowest_T} timesteps, too few for "
            f"--pipeline.diffusion-steps {config.diffusion_steps}; raise the lower bound above "
            f"{config.diffusion_steps / NUM_TRAIN_TIMESTEPS:g} or lower the steps"
        )
    side = config.edit_max_side
    if isinstance(side, bool) or not isinstance(side, int) or side < 0 or 0 < side < 8:
        raise IGS2GSConfigError(
            f"--pipeline.edit-max-side must be 0 (edit at full size) or an integer >= 8, got {side!r} (default 512)"
        )
    if isinstance(config.seed, bool) or not isinstance(config.seed, int) or config.seed < 0:
        raise IGS2GSConfigError(f"--pipeline.seed must be an integer >= 0, got {config.seed!r}")
    if not isinstance(config.prompt, str):
        raise IGS2GSConfigError(f"--pipeline.prompt must be text, got {config.prompt!r}")
    check_ip2p_device(config.ip2p_device)


def check_ip2p_device(device: Optional[str]) -> None:
    """Raise `IGS2GSConfigError` unless `device` (None: the training device) exists on this machine."""
    if device is None:
        return
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError) as err:
        raise IGS2GSConfigError(
            f"--pipeline.ip2p-device {device!r} is not a torch device ({err}); pass e.g. cuda, cuda:1 or cpu, "
            "or leave it out to edit on the training device"
        ) from None
    check_device_exists(parsed, "--pipeline.ip2p-device", "leave the option out to edit on the training device")


def check_device_exists(device: torch.device, option: str, alternative: str) -> None:
    """Raise `IGS2GSConfigError` when `device` (given by `option`) is not on this machine."""
    if device.type == "cuda":
        count = torch.cuda.device_count()  # NVML's count: initialises no CUDA before the edit processes fork
        if count == 0:
            raise IGS2GSConfigError(
                f"{option} {str(device)!r} asks for a CUDA GPU, but torch finds none on this machine "
                f"(torch.cuda.device_count() is 0); {alternative}, or pass cpu (slow: minutes per edit)"
            )
        if device.index is not None and device.index >= count:
            names = ", ".join(f"cuda:{i}" for i in range(count))
            raise IGS2GSConfigError(
                f"{option} {str(device)!r} names GPU {device.index}, but this machine has {count} CUDA "
                f"device{'s' if count != 1 else ''} ({names}); pass one of them or {alternative}"
            )
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise IGS2GSConfigError(f"{option} {str(device)!r}: torch finds no Apple MPS device; {alternative}")
    elif device.type != "cpu":
        raise IGS2GSConfigError(f"{option} {str(device)!r}: igs2gs runs on cuda, mps or cpu; {alternative}")


def check_data(data: Optional[Path], given: bool) -> Path:
    """Return the scene file nerfstudio's dataparser will read, or raise for a missing or wrong `--data`.

    `given` tells whether `--data` was passed (else `data` is the dataparser's default, the current folder).
    """
    example = "pass the scene folder the splatfacto checkpoint was trained on, e.g. --data data/bear"
    if data is None or (not given and not (Path(data) / "transforms.json").exists()):
        raise IGS2GSConfigError(f"--data is missing: {example} (the folder with transforms.json and images/)")
    data = Path(data)
    if not data.exists():
        raise IGS2GSConfigError(f"--data {str(data)!r} does not exist; {example}")
    if data.is_file():
        if data.suffix != ".json":
            raise IGS2GSConfigError(
                f"--data {str(data)!r} is a file, not a nerfstudio scene; {example} (or its transforms.json)"
            )
        return data
    transforms = data / "transforms.json"
    if not transforms.exists():
        raise IGS2GSConfigError(
            f"--data {str(data)!r} holds no transforms.json, so it is not a nerfstudio scene; {example} "
            "(ns-process-data writes one from photos)"
        )
    return transforms


def input_warnings(prompt: str, sizes: Iterable[Tuple[int, int]], edit_max_side: int) -> List[str]:
    """What to announce about the prompt and the training views' sizes [(height, width), ...]; [] when fine."""
    lines = []
    if not prompt.strip():
        lines.append(
            "--pipeline.prompt is empty: InstructPix2Pix gets no instruction and will only redraw the views; pass "
            'the edit, e.g. --pipeline.prompt "turn the bear into a panda"'
        )
    sizes = list(sizes)
    if not sizes:
        return lines
    height, width = max(sizes, key=max)
    largest = max(height, width)
    odd = [size for size in sizes if size[0] % 8 or size[1] % 8]
    if odd:
        lines.append(
            f"{len(odd)} of {len(sizes)} training views have sides that are not multiples of 8 (e.g. {odd[0][1]} x "
            f"{odd[0][0]} px); InstructPix2Pix's VAE needs multiples of 8, so they are edited slightly smaller and "
            "resized back"
        )
    if edit_max_side and largest > edit_max_side:
        lines.append(
            f"training views are up to {width} x {height} px: they are edited at {edit_max_side} px on the longer "
            f"side (--pipeline.edit-max-side {edit_max_side}; InstructPix2Pix works best near {BEST_EDIT_SIDE} px) "
            "and resized back, so edits are softer than the photos; --pipeline.edit-max-side 0 edits at full size"
        )
    elif not edit_max_side and largest > BEST_EDIT_SIDE:
        lines.append(
            f"--pipeline.edit-max-side 0 edits the views at full size (up to {width} x {height} px): InstructPix2Pix "
            f"works best near {BEST_EDIT_SIDE} px and needs far more memory above it; views that run out of memory "
            "are retried smaller"
        )
    return lines


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def announce_input_warnings(config: IGS2GSPipelineConfig, cameras: Cameras) -> None:
    """Print `input_warnings` for the pipeline's prompt and training cameras, once at the start."""
    sizes = zip(cameras.height.flatten().tolist(), cameras.width.flatten().tolist())
    for line in input_warnings(config.prompt, sizes, config.edit_max_side):
        CONSOLE.log(f"igs2gs: warning: {line}")
