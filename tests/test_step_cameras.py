"""Training cameras read without host-device synchronisations (igs2gs/step_cameras.py), checked on the CPU against
nerfstudio's own one-camera slices."""

from __future__ import annotations

import pytest
import torch
from nerfstudio.cameras.cameras import Cameras, CameraType

from igs2gs.step_cameras import StepCamera, StepCameras


def _cameras(n: int = 5) -> Cameras:
    torch.manual_seed(0)
    return Cameras(
        camera_to_worlds=torch.rand(n, 3, 4),
        fx=torch.rand(n, 1) * 100 + 400,
        fy=torch.rand(n, 1) * 100 + 400,
        cx=torch.full((n, 1), 255.5),
        cy=torch.full((n, 1), 191.5),
        width=torch.full((n, 1), 511),
        height=torch.full((n, 1), 383),
        camera_type=CameraType.PERSPECTIVE,
    )


def _fields(camera: Cameras) -> dict:
    return {name: getattr(camera, name) for name in ("camera_to_worlds", "fx", "fy", "cx", "cy", "width", "height")}


def test_a_step_camera_is_nerfstudios_slice_of_that_view():
    cameras = _cameras()
    step_cameras = StepCameras(cameras, "cpu")
    for idx in (3, 0, 3):
        camera = step_cameras(idx)
        expected = cameras[idx : idx + 1].to("cpu")
        assert isinstance(camera, StepCamera) and camera.shape == expected.shape
        for name, value in _fields(expected).items():
            torch.testing.assert_close(getattr(camera, name), value, rtol=0, atol=0)
        torch.testing.assert_close(camera.get_intrinsics_matrices(), expected.get_intrinsics_matrices())
        assert camera.metadata == {"cam_idx": idx}
        assert (int(camera.width.item()), int(camera.height.item())) == (511, 383)


def test_a_rescale_by_one_touches_nothing(monkeypatch):
    camera = StepCameras(_cameras(), "cpu")(1)
    before = _fields(camera)

    def no_tensor(*args, **kwargs):
        raise AssertionError("a rescale by 1 made a tensor (a host-device copy on a GPU)")

    monkeypatch.setattr(torch, "tensor", no_tensor)
    camera.rescale_output_resolution(1 / 1)
    camera.rescale_output_resolution(1)
    monkeypatch.undo()
    assert all(getattr(camera, name) is value for name, value in before.items())


@pytest.mark.parametrize("factor", [0.5, 0.25])
def test_another_factor_rescales_as_nerfstudio_does_and_stays_in_that_step(factor):
    cameras = _cameras()
    step_cameras = StepCameras(cameras, "cpu")
    camera, expected = step_cameras(2), cameras[2:3].to("cpu")
    for scale in (factor, 1 / factor):  # splatfacto's get_outputs: down for the render, then back
        camera.rescale_output_resolution(scale)
        expected.rescale_output_resolution(scale)
        for name, value in _fields(expected).items():
            torch.testing.assert_close(getattr(camera, name), value, rtol=0, atol=0)
        torch.testing.assert_close(camera.get_intrinsics_matrices(), expected.get_intrinsics_matrices())
    fresh = step_cameras(2)  # the next step's camera has not met this step's rescales
    for name, value in _fields(cameras[2:3]).items():
        torch.testing.assert_close(getattr(fresh, name), value, rtol=0, atol=0)
    camera.metadata["cam_idx"] = 99
    assert step_cameras(2).metadata == {"cam_idx": 2}


def test_the_datamanager_hands_out_step_cameras_in_nerfstudios_order(splatfacto_run, tmp_path, random_lpips_backbones):
    from nerfstudio.data.datamanagers.full_images_datamanager import FullImageDatamanager

    from tests.test_pipeline import make_trainer

    trainer = make_trainer(splatfacto_run, tmp_path)
    datamanager = trainer.pipeline.datamanager
    order = list(datamanager.train_unseen_cameras)
    views = len(datamanager.train_dataset)
    for step in range(views + 2):
        camera, data = datamanager.next_train(step)
        idx = camera.metadata["cam_idx"]
        assert isinstance(camera, StepCamera)
        if step < views:
            assert idx == order[step], "the views come in nerfstudio's order"
        torch.testing.assert_close(data["image"], datamanager.cached_train[idx]["image"])
        assert data is not datamanager.cached_train[idx]
    reference = FullImageDatamanager.next_train(datamanager, 0)[0]  # nerfstudio's camera for the next view
    ours = datamanager.step_cameras(reference.metadata["cam_idx"])
    for name, value in _fields(reference).items():
        torch.testing.assert_close(getattr(ours, name), value.cpu(), rtol=0, atol=0)
