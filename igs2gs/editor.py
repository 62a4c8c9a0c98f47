"""The small interface between the pipeline and a 2D image editor.

The pipeline hands an editor the current renders of some training views together with the
original photos of those views and gets edited images back. InstructPix2Pix (`ip2p.py`) is the
editor we ship; tests and benchmarks plug in others (for example a fixed colour transform).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol, runtime_checkable

import torch
from torch import Tensor


@dataclass
class EditSettings:
    """What one edit computes; read from the pipeline config at every edit so changes apply at once."""

    prompt: str
    """The text instruction, e.g. "turn the bear into a panda"."""
    guidance_scale: float = 12.5
    """Text guidance s_text (> 0)."""
    image_guidance_scale: float = 1.5
    """Image guidance s_img (> 0)."""
    diffusion_steps: int = 20
    """DDIM steps spread over [0, T)."""
    lower_bound: float = 0.70
    """T is drawn uniformly in [lower_bound, upper_bound] x num_train_timesteps."""
    upper_bound: float = 0.98


@runtime_checkable
class ImageEditor(Protocol):
    """Edits renders of training views, conditioned on their original photos."""

    def edit(
        self,
        renders: Tensor,  # [B, 3, H, W] in [0, 1]
        originals: Tensor,  # [B, 3, H, W] in [0, 1]
        settings: EditSettings,
        generator: Optional[torch.Generator] = None,
    ) -> Tensor:  # [B, 3, H, W] in [0, 1], float32, on the renders' device
        """Return the edited images; `generator` (a CPU generator) makes the edit reproducible."""
        ...
