"""How much a dataset-update round changed the splats, and a stop when it changed nothing.

A round trains one step on each freshly edited view. If afterwards not one Gaussian moved, the
edits cannot reach the scene: on nerfstudio 1.1.5 that happens when the optimizers still hold the
tensors the checkpoint replaced (NOTES.md item 5, fixed by `optimizer_binding`). The original
code ran for hours in that state; this check stops after the first round and names the cause.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Mapping, Optional

import torch

from igs2gs.errors import SplatsNotUpdatedError

TRACKED = {"means": "means", "features_dc": "colors", "opacities": "opacities"}
"""Gaussian parameters compared before and after a round, with the names reported."""


@torch.no_grad()
def snapshot(params: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Copies of the tracked parameters (each [N, ...])."""
    return {name: params[name].detach().clone() for name in TRACKED if name in params}


@dataclass
class SplatChange:
    """Mean absolute change of each tracked parameter over a round (None where the count changed)."""

    count_before: int
    count_after: int
    mean_abs: Dict[str, Optional[float]]

    @property
    def unchanged(self) -> bool:
        """True when no Gaussian was added, removed or changed."""
        return self.count_before == self.count_after and all(v == 0.0 for v in self.mean_abs.values())

    def describe(self) -> str:
        """E.g. 'mean |change| means 1.2e-04, colors 3.1e-03, opacities 8.0e-03 over 12,000 Gaussians'."""
        if self.count_before != self.count_after:
            return f"the Gaussians went from {self.count_before:,} to {self.count_after:,}"
        values = ", ".join(f"{TRACKED[name]} {value:.1e}" for name, value in self.mean_abs.items())
        return f"mean |change| {values} over {self.count_after:,} Gaussians"


@torch.no_grad()
def splat_change(before: Mapping[str, torch.Tensor], params: Mapping[str, torch.Tensor]) -> SplatChange:
    """Compare the parameters now with a `snapshot` taken earlier."""
    count_before = next(iter(before.values())).shape[0] if before else 0
    count_after = params["means"].shape[0]
    mean_abs: Dict[str, Optional[float]] = {}
    for name, old in before.items():
        new = params[name].detach()
        mean_abs[name] = float((new - old.to(new.device)).abs().mean()) if new.shape == old.shape else None
    return SplatChange(count_before, count_after, mean_abs)


class SplatChangeMonitor:
    """`begin` when a round begins (or resumes), `finish` after its last training step."""

    def __init__(self) -> None:
        self._before: Optional[Dict[str, torch.Tensor]] = None

    def begin(self, params: Mapping[str, torch.Tensor]) -> None:
        """Remember the splats as they are now."""
        self._before = snapshot(params)

    def finish(self, params: Mapping[str, torch.Tensor]) -> Optional[SplatChange]:
        """The change since `begin` (None without one)."""
        before, self._before = self._before, None
        return None if before is None else splat_change(before, params)


def stop_if_unchanged(change: SplatChange, round_number: int, optimizers_hold_model: bool, model_name: str) -> None:
    """Raise `SplatsNotUpdatedError`, naming the likely cause, when a round left every Gaussian as it was."""
    if not change.unchanged:
        return
    if not optimizers_hold_model:
        cause = (
            "the optimizers do not hold the model's tensors (optimizer binding): nerfstudio builds the optimizers "
            "before it loads the checkpoint, and loading replaces the Gaussian tensors, so the optimizers update "
            f"dead copies (NOTES.md item 5). igs2gs's model, IGS2GSModel, re-binds them (igs2gs.optimizer_binding); "
            f"this run's model, {model_name}, does not"
        )
    else:
        cause = (
            "the optimizers hold the model's tensors, yet nothing moved: check that the learning rates of means, "
            "features_dc and opacities are not 0 and that the loss reaches the Gaussians"
        )
    raise SplatsNotUpdatedError(
        f"round {round_number} trained on its edited views, but no Gaussian changed ({change.describe()}): {cause}. "
        "The edits made so far are kept in the run's edits/ folder."
    )
