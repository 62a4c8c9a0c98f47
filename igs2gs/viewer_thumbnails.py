"""The training cameras' thumbnails in nerfstudio's viewer, made from the photos the datamanager has cached.

Before the first training step, nerfstudio's `Viewer.init_scene` draws every training camera with a thumbnail of its
photo: it reads each photo from disk again, scales it to bytes and resizes it to 100 px on the CPU. For bear's 87
views that took 3 s on the lent GPU machines (py-spy, benchmarks/RESULTS.md), during which training and the edits it
feeds wait. `ThumbnailDataset` hands `init_scene` the same cameras with thumbnails resized from the cached originals
on their device (antialiased, so they look no worse), so its own resize has nothing left to do.
"""

from __future__ import annotations

from typing import Any, Callable, Dict

import torch
import torch.nn.functional as F

THUMBNAIL_HEIGHT = 100
"""The height nerfstudio's viewer gives its camera thumbnails (`Viewer.init_scene`)."""


@torch.no_grad()
def thumbnail(image: torch.Tensor, height: int = THUMBNAIL_HEIGHT) -> torch.Tensor:
    """`image` [H, W, C] in [0, 1] as an RGB thumbnail [height, W * height / H, 3] on the CPU (never enlarged)."""
    h, w = image.shape[:2]
    if h > height:
        size = (height, max(1, round(w * height / h)))
        chw = image[..., :3].permute(2, 0, 1)[None].float()
        image = F.interpolate(chw, size=size, mode="bilinear", antialias=True, align_corners=False)[0].permute(1, 2, 0)
    return image[..., :3].clamp(0, 1).cpu()


class ThumbnailDataset:
    """What `Viewer.init_scene` reads of a training dataset (its length, cameras and images), with each image a
    thumbnail of `photo(idx)`."""

    def __init__(self, dataset: Any, photo: Callable[[int], torch.Tensor]) -> None:
        self.dataset, self.photo = dataset, photo

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def cameras(self) -> Any:
        return self.dataset.cameras

    def __getitem__(self, idx: int) -> Dict[str, torch.Tensor]:
        return {"image": thumbnail(self.photo(idx))}
