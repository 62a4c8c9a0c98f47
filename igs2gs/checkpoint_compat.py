"""Let nerfstudio checkpoints load under torch >= 2.6, where `torch.load` defaults to `weights_only=True`.

nerfstudio's trainer calls `torch.load(path, map_location="cpu")` without `weights_only`. Its
checkpoints hold numpy float64 scalars: the exponential-decay schedulers compute learning rates
with `np.exp`, and those values end up in the scheduler state (`_last_lr`) and in the optimizer
param groups (`lr`). The weights-only unpickler rejects them. Instead of turning the safe loader off
(`TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`), we allowlist exactly these numpy types, under the module
names that numpy 1.x and 2.x write into pickles, so a checkpoint written with either loads with the
other.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

_SCALAR_PICKLE_NAMES = ("numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar")


def _numpy_scalar_reconstructor():
    """numpy's scalar reconstructor, wherever this numpy version keeps it."""
    try:  # numpy >= 2
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy 1.x (its `numpy._core` is an empty stub)
        from numpy.core.multiarray import scalar
    return scalar


def numpy_checkpoint_globals() -> list:
    """The numpy globals found in nerfstudio checkpoints, in `torch.serialization.add_safe_globals` form."""
    scalar = _numpy_scalar_reconstructor()
    safe: list = [np.dtype, np.dtypes.Float64DType]
    safe += [(scalar, name) for name in _SCALAR_PICKLE_NAMES]
    return safe


def allow_numpy_scalars_in_checkpoints() -> None:
    """Allowlist the numpy types of nerfstudio checkpoints for `torch.load(..., weights_only=True)`."""
    add_safe_globals = getattr(torch.serialization, "add_safe_globals", None)
    if add_safe_globals is None:
        # torch < 2.4 has no allowlist, and there `weights_only` defaults to False anyway.
        warnings.warn("torch.serialization.add_safe_globals is missing; checkpoints load with torch's defaults.")
        return
    add_safe_globals(numpy_checkpoint_globals())
