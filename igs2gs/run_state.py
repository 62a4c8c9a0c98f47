"""The bookkeeping a checkpoint needs to resume an igs2gs run exactly, stored weights-only safe.

`RunState` travels in the pipeline's state dict under `RUN_STATE_KEY` as UTF-8 JSON in a uint8 tensor
(plus the torch generator states under `RNG_KEY_PREFIX`), so `torch.load(weights_only=True)` reads it
and nothing in it can run code.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Tuple

import torch

if TYPE_CHECKING:
    from igs2gs.igs2gs_pipeline import IGS2GSPipelineConfig

RUN_STATE_KEY = "igs2gs_run"
"""Checkpoint key of the `RunState` (uint8 JSON)."""
RNG_KEY_PREFIX = "igs2gs_rng."
"""Checkpoint keys of the torch generator states (uint8 tensors)."""
EDIT_SETTINGS = (
    "prompt",
    "guidance_scale",
    "image_guidance_scale",
    "diffusion_steps",
    "lower_bound",
    "upper_bound",
    "seed",
    "edit_max_side",
    "ip2p_model",
)
"""The pipeline options that decide what an edit looks like."""


@dataclass
class RunState:
    """What a checkpoint adds to the Gaussians, the edited images and the round (`igs2gs_round`)."""

    round_start_step: int = -1
    """Step at which the current (or last) round began: a round never begins twice at the same step."""
    end_step: Optional[int] = None
    """The run's last training step; a checkpoint before it is of an unfinished run, which resumes."""
    settings: Dict[str, Any] = field(default_factory=dict)
    """The edit settings (`EDIT_SETTINGS`) of the run's latest edit."""
    view_steps: Dict[int, int] = field(default_factory=dict)
    """Step of the latest edit of each edited view."""
    rng: Dict[str, Any] = field(default_factory=dict)
    """JSON-able generator and sampler states (`rng_state.capture_rng`)."""


def encode_run_state(state: RunState, rng_tensors: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The checkpoint entries of a run state and the torch generator states."""
    data = asdict(state)
    data["view_steps"] = {str(view): step for view, step in state.view_steps.items()}
    text = json.dumps(data, separators=(",", ":"))
    entries = {RUN_STATE_KEY: torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8)}
    entries.update({RNG_KEY_PREFIX + name: tensor for name, tensor in rng_tensors.items()})
    return entries


def decode_run_state(entries: Mapping[str, Any]) -> Tuple[Optional[RunState], Dict[str, torch.Tensor]]:
    """The run state (None when the checkpoint has none) and the torch generator states of checkpoint entries."""
    rng = {key[len(RNG_KEY_PREFIX) :]: value for key, value in entries.items() if key.startswith(RNG_KEY_PREFIX)}
    encoded = entries.get(RUN_STATE_KEY)
    if encoded is None:
        return None, rng
    data = json.loads(encoded.to(torch.uint8).cpu().numpy().tobytes().decode("utf-8"))
    known = {name: data[name] for name in RunState.__dataclass_fields__ if name in data}
    known["view_steps"] = {int(view): int(step) for view, step in known.get("view_steps", {}).items()}
    return RunState(**known), rng


def split_run_state(state_dict: Mapping[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(the other entries, the run-state entries) of a pipeline state dict."""
    mine = {k: v for k, v in state_dict.items() if k == RUN_STATE_KEY or k.startswith(RNG_KEY_PREFIX)}
    return {k: v for k, v in state_dict.items() if k not in mine}, mine


def edit_settings(config: IGS2GSPipelineConfig) -> Dict[str, Any]:
    """The options of `config` that decide what an edit looks like."""
    return {name: getattr(config, name) for name in EDIT_SETTINGS}


def settings_hash(settings: Mapping[str, Any]) -> str:
    """A short stable hash of edit settings (the same settings give the same hash on every machine)."""
    text = json.dumps({k: settings[k] for k in sorted(settings)}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def changed_settings(before: Mapping[str, Any], now: Mapping[str, Any]) -> List[str]:
    """'name: old -> new' for every edit setting that differs (settings missing from `before` are skipped)."""
    return [f"{name}: {before[name]!r} -> {now.get(name)!r}" for name in before if before[name] != now.get(name)]
