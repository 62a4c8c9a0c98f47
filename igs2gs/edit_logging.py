"""Log each round's edits through nerfstudio's writer: a before/after grid of a few views and counters.

`nerfstudio.utils.writer` forwards `put_image` / `put_scalar` to every enabled writer (tensorboard,
wandb, comet); the trainer writes them out after each step. The grid has one row per sampled view:
the view's render at the step that trains on its edit (with `edit_batch_size` > 1 the edit was made a few
steps earlier, from that step's render), then the edited image that the splats now train on.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from nerfstudio.configs import base_config  # noqa: F401 (before writer, which imports it in a cycle)
from nerfstudio.utils import writer

GRID_NAME = "igs2gs/edits (render | edited)"
"""Writer name of the before/after grid."""
SCALAR_NAMES = ("igs2gs/round", "igs2gs/views_edited", "igs2gs/seconds_per_edit", "igs2gs/round_seconds")
"""Writer names of the per-round counters."""


def sample_views(num_views: int, count: int) -> List[int]:
    """`count` view indices spread evenly over [0, num_views), first view included, no repeats."""
    if num_views <= 0 or count <= 0:
        return []
    count = min(count, num_views)
    return sorted({i * num_views // count for i in range(count)})


def thumbnail(image: torch.Tensor, max_side: int) -> torch.Tensor:
    """An [H, W, 3] image shrunk (never enlarged) to at most `max_side` px on its longer side, float32 on CPU."""
    image = image.detach()[..., :3].float().cpu()
    height, width = image.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    if scale == 1.0:
        return image
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    chw = F.interpolate(image.permute(2, 0, 1)[None], size=size, mode="bilinear", antialias=True, align_corners=False)
    return chw[0].permute(1, 2, 0)


def image_grid(rows: List[List[torch.Tensor]], pad: int = 2, fill: float = 1.0) -> torch.Tensor:
    """Tile [H, W, 3] images row by row into one [H', W', 3] image; cells are padded to the largest cell."""
    assert rows and all(rows), f"image_grid needs at least one image per row, got {[len(r) for r in rows]}"
    cell_h = max(img.shape[0] for row in rows for img in row)
    cell_w = max(img.shape[1] for row in rows for img in row)
    cols = max(len(row) for row in rows)
    grid = torch.full((len(rows) * (cell_h + pad) + pad, cols * (cell_w + pad) + pad, 3), fill)
    for r, row in enumerate(rows):
        for c, img in enumerate(row):
            y, x = pad + r * (cell_h + pad), pad + c * (cell_w + pad)
            grid[y : y + img.shape[0], x : x + img.shape[1]] = img.clamp(0, 1)
    return grid


class EditLog:
    """Keeps render/edit thumbnails of a few sampled views during a round and writes them at its end."""

    def __init__(self, num_samples: int = 4, max_side: int = 256) -> None:
        self.num_samples = num_samples
        self.max_side = max_side
        self.samples: Dict[int, Tuple[torch.Tensor, torch.Tensor]] = {}
        self._wanted: List[int] = []

    def begin(self, num_views: int) -> None:
        """Start collecting a new round."""
        self.samples = {}
        self._wanted = sample_views(num_views, self.num_samples)

    def record(self, idx: int, render: torch.Tensor, edited: torch.Tensor) -> None:
        """Keep view `idx`'s render and edit ([H, W, 3] in [0, 1]) when it is one of the sampled views."""
        if idx in self._wanted:
            self.samples[idx] = (thumbnail(render, self.max_side), thumbnail(edited, self.max_side))

    def grid(self) -> torch.Tensor:
        """[H, W, 3] grid: one row per recorded view (in index order), render left, edit right."""
        return image_grid([list(self.samples[idx]) for idx in sorted(self.samples)])

    def write(self, step: int, round_number: int, views_edited: int, seconds_per_edit: float, round_seconds: float):
        """Queue the grid and the counters in nerfstudio's writer at `step`."""
        if self.samples:
            writer.put_image(name=GRID_NAME, image=self.grid(), step=step)
        values = (round_number, views_edited, seconds_per_edit, round_seconds)
        for name, value in zip(SCALAR_NAMES, values):
            writer.put_scalar(name=name, scalar=value, step=step)
