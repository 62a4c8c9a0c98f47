"""Point the trainer's optimizers at the Gaussians the model actually holds.

nerfstudio 1.1.5's trainer builds its optimizers before it loads the checkpoint. splatfacto's
`load_state_dict` then swaps every Gaussian tensor for a new one of the checkpoint's size, so the
optimizers keep updating the dead tensors and the loaded scene never changes (and gsplat's
densification later indexes optimizer state of the wrong size). `rebind_optimizers` moves each
optimizer's parameter and its state onto the live tensor, as gsplat's
`strategy/ops.py::_update_param_with_optimizer` moves state when it replaces a parameter.
"""

from __future__ import annotations

from typing import Dict, List, Mapping

import torch
from torch.nn import Parameter


@torch.no_grad()
def rebind_optimizers(optimizers: Mapping[str, torch.optim.Optimizer], params: Mapping[str, Parameter]) -> List[str]:
    """Make optimizer `name` own `params[name]`; return the names that were stale.

    State whose shape matches the live tensor (e.g. Adam moments loaded from the checkpoint) is
    kept; state of another shape is reset, so the next step starts those moments from zero.
    """
    rebound = []
    for name, live in params.items():
        optimizer = optimizers.get(name)
        if optimizer is None:
            continue
        assert len(optimizer.param_groups) == 1 and len(optimizer.param_groups[0]["params"]) == 1, (
            f"optimizer {name!r} must hold exactly one Gaussian tensor, got {optimizer.param_groups}"
        )
        stale = optimizer.param_groups[0]["params"][0]
        if stale is live:
            continue
        state: Dict = optimizer.state.pop(stale, {})
        optimizer.param_groups[0]["params"] = [live]
        optimizer.state[live] = {key: _fit_state(value, live) for key, value in state.items()}
        rebound.append(name)
    return rebound


def _fit_state(value, live: torch.Tensor):
    """Keep a per-element state tensor that fits `live`; zero it when its shape does not."""
    if not isinstance(value, torch.Tensor) or value.dim() == 0:
        return value
    if value.shape == live.shape:
        return value.to(live.device)
    return torch.zeros_like(live)


def optimizers_hold(optimizers: Mapping[str, torch.optim.Optimizer], params: Mapping[str, Parameter]) -> bool:
    """True when every optimizer named like a parameter holds that very tensor."""
    return all(
        optimizers[name].param_groups[0]["params"][0] is live for name, live in params.items() if name in optimizers
    )
