"""When dataset-update rounds happen, and where the current round stands.

Instruct-GS2GS edits every training view once per round, in index order, one view per training
step. A round starts at every step with `(step - 1) % gs_steps == 0`; between rounds the splats
train on the (edited) image cache.
"""

from __future__ import annotations

from dataclasses import dataclass


def starts_round(step: int, gs_steps: int) -> bool:
    """True when a dataset-update round begins at trainer step `step`."""
    if gs_steps < 1:
        raise ValueError(f"gs_steps must be >= 1, got {gs_steps}")
    return (step - 1) % gs_steps == 0


@dataclass
class EditRound:
    """Progress of the dataset-update rounds; explicit so that it can be checkpointed."""

    active: bool = False
    """True while the current round still has views to edit."""
    cursor: int = 0
    """Index of the next training view to edit in this round."""
    rounds_started: int = 0
    """How many rounds have started in this run."""

    def begin(self) -> None:
        """Start a new round at the first view (a round in progress starts over)."""
        self.active = True
        self.cursor = 0
        self.rounds_started += 1

    def advance(self, num_views: int) -> None:
        """Mark the view at `cursor` as edited; end the round after the last view."""
        assert self.active, "advance() called outside a round; call begin() first"
        self.cursor += 1
        if self.cursor >= num_views:
            self.active = False
            self.cursor = 0
