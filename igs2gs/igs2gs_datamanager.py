"""Datamanager that caches every training image as float32 and keeps the original photos."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Dict, List, Literal, Mapping, Set, Tuple, Type

import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.data.datamanagers.full_images_datamanager import FullImageDatamanager, FullImageDatamanagerConfig
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
from nerfstudio.utils.rich_utils import CONSOLE

from igs2gs.step_cameras import StepCameras


@dataclass
class IGS2GSDataManagerConfig(FullImageDatamanagerConfig):
    """Full-image datamanager whose training images can be overwritten by edits."""

    _target: Type = field(default_factory=lambda: IGS2GSDataManager)
    dataparser: NerfstudioDataParserConfig = field(
        default_factory=lambda: NerfstudioDataParserConfig(load_3D_points=True)
    )
    """The scene's dataparser; 3D points are loaded as splatfacto does, so the model is built the same way."""
    cache_images_type: Literal["uint8", "float32"] = "float32"
    """Edits are written back as float32; a uint8 cache is converted (and announced)."""


class IGS2GSDataManager(FullImageDatamanager):
    """Training images live in `cached_train` (edited in place); `original_images` keeps the photos."""

    config: IGS2GSDataManagerConfig
    original_images: List[torch.Tensor]  # each [H, W, C] float32 in [0, 1], never edited
    edited_views: Set[int]  # views whose cached image is an edit

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.edited_views = set()

    def _load_images(self, split, cache_images_device) -> List[Dict[str, torch.Tensor]]:
        if self.config.cache_images_type != "float32":
            CONSOLE.print("igs2gs: overriding cache_images_type to float32 (edited images are float32)")
            self.config.cache_images_type = "float32"
        images = super()._load_images(split, cache_images_device)
        if split == "train":
            self.original_images = [data["image"].clone() for data in images]
        return images

    @property
    def num_train_views(self) -> int:
        """Number of training views (the length of a dataset-update round)."""
        return len(self.train_dataset)

    def next_train(self, step: int) -> Tuple[Cameras, Dict]:
        """nerfstudio's next training view (the same order), with its camera from `step_cameras`."""
        idx = self.train_unseen_cameras.pop(0)
        if not self.train_unseen_cameras:
            self.train_unseen_cameras = self.sample_train_cameras()
        return self.next_train_idx(idx)

    def next_train_idx(self, idx: int) -> Tuple[Cameras, Dict]:
        """The training camera and cached image of view `idx` (the round's order, not the random one)."""
        data = self.cached_train[idx].copy()  # a copy, as next_train does (nerfstudio issue #3335)
        data["image"] = data["image"].to(self.device)
        return self.step_cameras(idx), data

    @cached_property
    def step_cameras(self) -> StepCameras:
        """The training cameras, read by a training step without host-device synchronisations (step_cameras.py)."""
        self.cached_train  # noqa: B018 (caching the images may undistort the cameras)
        return StepCameras(self.train_cameras, self.device)

    def original_image(self, idx: int) -> torch.Tensor:
        """The original photo of view `idx`, RGB only: [H, W, 3] float32 in [0, 1]."""
        self.cached_train  # noqa: B018 (loading the cache records the originals)
        return self.original_images[idx][..., :3]

    @torch.no_grad()
    def write_edit(self, idx: int, image: torch.Tensor) -> torch.Tensor:
        """Store an edited image [H, W, 3] in [0, 1] of view `idx` in the cache; return the cached image.

        Edits are kept at 8-bit precision (as an image file would keep them), so the cache equals
        exactly what a checkpoint saves and restores.
        """
        cached = self.cached_train[idx]["image"]
        assert image.shape == (*cached.shape[:2], 3), f"edit of shape {tuple(image.shape)} for {tuple(cached.shape)}"
        # In place, so the cache keeps its device and pinned memory; an alpha channel stays as it was.
        cached[..., :3] = to_uint8(image).to(device=cached.device, dtype=cached.dtype) / 255.0
        self.edited_views.add(idx)
        return cached

    def edits_state_dict(self) -> Dict[str, torch.Tensor]:
        """The edited images as uint8 [H, W, 3] tensors on the cache's device, one entry per edited view, for
        checkpoints. They stay there: the checkpoint's writer thread copies them out (checkpoint_writer.py), where a
        copy here would wait, once per view, for the work queued on the GPU (0.4 s per checkpoint on an H200 that
        edited beside training)."""
        if not self.edited_views:
            return {}
        return {edit_key(idx): to_uint8(self.cached_train[idx]["image"][..., :3]) for idx in self.edited_views}

    def load_edits_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Put the edited images of a checkpoint back into the cache."""
        for idx in sorted(view_of_edit_key(key) for key in state):
            if idx >= self.num_train_views:
                raise ValueError(
                    f"the checkpoint holds an edit of training view {idx}, but this dataset has "
                    f"{self.num_train_views} training views: is --data the scene the checkpoint was trained on?"
                )
            self.write_edit(idx, state[edit_key(idx)].float() / 255.0)


EDIT_KEY_PREFIX = "igs2gs_edits.view_"


def edit_key(idx: int) -> str:
    """Checkpoint key of the edited image of training view `idx`."""
    return f"{EDIT_KEY_PREFIX}{idx:05d}"


def view_of_edit_key(key: str) -> int:
    assert key.startswith(EDIT_KEY_PREFIX), key
    return int(key[len(EDIT_KEY_PREFIX) :])


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats to uint8, rounding to the nearest level."""
    return (image.clamp(0, 1) * 255).round().to(torch.uint8)
