"""Random state that decides a run's next steps, captured into checkpoints and restored from them.

A resumed run draws what the interrupted one would have drawn: the order of the training views
(nerfstudio's `FullImageDatamanager.train_unseen_cameras`, refilled by its own `random.Random` or, for
"fps" sampling, from per-view counts), the global Python, numpy and torch generators (splatfacto's
random background, gsplat's splits, the eval view picks). Edits need none of it: each is seeded by
(seed, step) (`igs2gs_pipeline.edit_seed`).

Checkpoints must load with `torch.load(weights_only=True)`, so everything is stored as tensors or
as JSON-able lists and numbers, never as pickled Python objects.
"""

from __future__ import annotations

import random
from typing import Any, Dict, Mapping, Tuple

import numpy as np
import torch


def capture_rng(datamanager: Any) -> Tuple[Dict[str, Any], Dict[str, torch.Tensor]]:
    """The sampler's and the global generators' states: (JSON-able values, uint8 tensors)."""
    plain: Dict[str, Any] = {"python": _python_state(random.getstate()), "numpy": _numpy_state(np.random.get_state())}
    unseen = getattr(datamanager, "train_unseen_cameras", None)
    if unseen is not None:
        plain["train_unseen"] = [int(i) for i in unseen]
    sampler = getattr(datamanager, "random_generator", None)
    if isinstance(sampler, random.Random):
        plain["train_sampler"] = _python_state(sampler.getstate())
    counts = getattr(datamanager, "train_unsampled_epoch_count", None)
    if counts is not None:
        plain["train_unsampled_epoch_count"] = np.asarray(counts).tolist()
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors.update({f"cuda.{i}": state for i, state in enumerate(torch.cuda.get_rng_state_all())})
    return plain, tensors


def restore_rng(datamanager: Any, plain: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> None:
    """Put back what `capture_rng` returned; parts the checkpoint lacks (or this machine cannot take) stay."""
    if "python" in plain:
        random.setstate(_python_tuple(plain["python"]))
    if "numpy" in plain:
        np.random.set_state(_numpy_tuple(plain["numpy"]))
    unseen = plain.get("train_unseen")
    if unseen and hasattr(datamanager, "train_unseen_cameras") and max(unseen) < len(datamanager.train_dataset):
        datamanager.train_unseen_cameras = [int(i) for i in unseen]
    if "train_sampler" in plain:
        sampler = getattr(datamanager, "random_generator", None)
        if sampler is None:  # nerfstudio creates it on the first refill
            sampler = datamanager.random_generator = random.Random()
        sampler.setstate(_python_tuple(plain["train_sampler"]))
    if "train_unsampled_epoch_count" in plain and hasattr(datamanager, "train_unsampled_epoch_count"):
        datamanager.train_unsampled_epoch_count = np.asarray(plain["train_unsampled_epoch_count"], dtype=np.float64)
    if "torch" in tensors:
        torch.set_rng_state(tensors["torch"].to(torch.uint8).cpu())
    cuda = [tensors[f"cuda.{i}"] for i in range(len(tensors)) if f"cuda.{i}" in tensors]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([state.to(torch.uint8).cpu() for state in cuda])


def _python_state(state: tuple) -> list:
    version, internal, gauss_next = state
    return [version, list(internal), gauss_next]


def _python_tuple(state: list) -> tuple:
    version, internal, gauss_next = state
    return (int(version), tuple(int(v) for v in internal), gauss_next)


def _numpy_state(state: tuple) -> list:
    name, keys, pos, has_gauss, cached = state
    return [name, [int(k) for k in keys], int(pos), int(has_gauss), float(cached)]


def _numpy_tuple(state: list) -> tuple:
    name, keys, pos, has_gauss, cached = state
    return (name, np.asarray(keys, dtype=np.uint32), int(pos), int(has_gauss), float(cached))
