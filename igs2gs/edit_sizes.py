"""The size a view is edited at, and the resize to and from it (light: the edit process imports it too)."""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F


def edit_resolution(height: int, width: int, max_side: int = 512) -> Tuple[int, int]:
    """The size a view is edited at: longer side at most `max_side` (0: no limit), both sides multiples of 8."""
    scale = min(1.0, max_side / max(height, width)) if max_side > 0 else 1.0
    fit = tuple(max(8, int(side * scale) // 8 * 8) for side in (height, width))
    return fit[0], fit[1]


def resize(images: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of [B, C, H, W] images to `size` (antialiased when shrinking); a no-op at that size."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)
