"""The viewer's camera thumbnails made from the cached photos (viewer_thumbnails.py, `IGS2GSTrainer`)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.viewer.viewer import Viewer

from igs2gs.trainer_config import IGS2GSTrainer
from igs2gs.viewer_thumbnails import ThumbnailDataset, thumbnail


def test_a_thumbnail_is_100_px_high_antialiased_and_on_the_cpu():
    stripes = torch.zeros(400, 600, 4)
    stripes[(torch.arange(400) // 4) % 2 == 0, :, :3] = 1.0  # 4-row stripes: a plain resize keeps them black or white
    small = thumbnail(stripes)
    assert small.shape == (100, 150, 3) and small.device.type == "cpu"
    assert abs(small.mean().item() - 0.5) < 0.02 and small.min() > 0.1 and small.max() < 0.9


def test_a_small_photo_is_not_enlarged():
    photo = torch.rand(60, 80, 3)
    assert torch.equal(thumbnail(photo), photo)


class FakeFrustum:
    def on_click(self, callback) -> None:
        self.callback = callback


class RecordingScene:
    def __init__(self) -> None:
        self.images: dict = {}

    def add_camera_frustum(self, name: str, image: np.ndarray, **kwargs) -> FakeFrustum:
        self.images[name] = image
        return FakeFrustum()


class UnreadDataset:
    """A training dataset whose photos must not be read again."""

    def __init__(self, num_views: int, size: int) -> None:
        eye = torch.eye(4)[:3][None].repeat(num_views, 1, 1)
        self.cameras = Cameras(
            camera_to_worlds=eye, fx=50.0, fy=50.0, cx=size / 2, cy=size / 2, width=size, height=size
        )
        self.num_views = num_views

    def __len__(self) -> int:
        return self.num_views

    def __getitem__(self, idx: int):
        raise AssertionError("the viewer read a photo from the dataset")


def test_the_trainer_draws_every_camera_with_a_thumbnail_of_its_cached_photo():
    views, size = 4, 240
    photos = [torch.full((size, size, 3), v / 4) for v in range(views)]
    viewer = Viewer.__new__(Viewer)  # nerfstudio's viewer, with a scene that records what it is given
    viewer.viser_server = SimpleNamespace(scene=RecordingScene())
    viewer.config = SimpleNamespace(max_num_display_images=512, camera_frustum_scale=0.1)
    trainer = IGS2GSTrainer.__new__(IGS2GSTrainer)
    trainer.viewer_state, trainer.training_state = viewer, "training"
    trainer.config = SimpleNamespace(is_viewer_enabled=lambda: True)
    trainer.pipeline = SimpleNamespace(
        datamanager=SimpleNamespace(
            train_dataset=UnreadDataset(views, size), eval_dataset=None, original_image=lambda idx: photos[idx]
        )
    )
    trainer._init_viewer_state()
    drawn = viewer.viser_server.scene.images
    assert sorted(drawn) == [f"/cameras/camera_{v:05d}" for v in range(views)]
    for v in range(views):
        image = drawn[f"/cameras/camera_{v:05d}"]
        assert image.shape == (100, 100, 3) and image.dtype == np.uint8
        assert np.all(np.abs(image.astype(int) - int(v / 4 * 255)) <= 1)


def test_thumbnails_come_from_the_photo_function():
    dataset = ThumbnailDataset(UnreadDataset(2, 300), lambda idx: torch.full((300, 300, 3), 0.25 * (idx + 1)))
    assert len(dataset) == 2 and dataset.cameras.shape == (2,)
    assert torch.allclose(dataset[1]["image"], torch.full((100, 100, 3), 0.5))
