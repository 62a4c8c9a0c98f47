"""Training cameras that splatfacto's step can read without waiting for the GPU.

nerfstudio 1.1.5 gives every training step a fresh one-camera slice of the training cameras
(`FullImageDatamanager.next_train`), and splatfacto's `get_outputs` then
- builds the intrinsics matrix on the CPU from the camera's GPU tensors and copies it back
  (`Cameras.get_intrinsics_matrices`, then `.cuda()`): five host-device synchronisations;
- calls `rescale_output_resolution` twice, also with a factor of 1, each copying the factor to the GPU first:
  two more;
- reads the width and height with `.item()`: two more.

A synchronisation makes the training thread wait until the GPU has run everything queued before it. With
InstructPix2Pix on the same GPU, that is the editor's kernels too: in round 2 of a default bear edit on one H200,
the step spent 15 % of its 16.5 ms in `rescale_output_resolution` alone (benchmarks/RESULTS.md, stack samples).
And slicing a `TensorDataclass` and moving it costs about 0.1 ms of Python per step.

`StepCamera` is one training camera prepared once, on the training device, with its intrinsics matrix made
there and its width and height kept on the CPU. A rescale by 1 changes nothing, so it returns at once; any other
factor (splatfacto's resolution schedule, `num_downscales` > 0) moves width and height to the device and rescales
as nerfstudio does. `StepCameras` hands out a shallow copy of view `idx`'s camera per step, so what a step changes
(a rescale, the metadata) never reaches the next step.
"""

from __future__ import annotations

import copy
from typing import Dict, List, Optional, Union

import torch
from nerfstudio.cameras.cameras import Cameras

_INTRINSICS = "_step_intrinsics"


class StepCamera(Cameras):
    """A one-camera `Cameras` whose intrinsics are made once on its device and whose width and height live on the
    CPU (see the module docstring)."""

    def get_intrinsics_matrices(self) -> torch.Tensor:
        intrinsics = self.__dict__.get(_INTRINSICS)
        return super().get_intrinsics_matrices() if intrinsics is None else intrinsics

    def rescale_output_resolution(
        self, scaling_factor: Union[torch.Tensor, float, int], scale_rounding_mode: str = "floor"
    ) -> None:
        if isinstance(scaling_factor, (float, int)) and scaling_factor == 1:
            return  # nerfstudio's rescale by 1 leaves every field as it is (after a copy of the 1 to the GPU)
        self.__dict__.pop(_INTRINSICS, None)
        object.__setattr__(self, "width", self.width.to(self.device))
        object.__setattr__(self, "height", self.height.to(self.device))
        super().rescale_output_resolution(scaling_factor, scale_rounding_mode)


def step_camera(cameras: Cameras, idx: int, device: Union[torch.device, str]) -> StepCamera:
    """View `idx` of `cameras` as a `StepCamera` on `device`."""
    camera = cameras[idx : idx + 1].to(device)
    fields = {name: getattr(camera, name) for name in camera.__dataclass_fields__}
    prepared = StepCamera(**fields)
    intrinsics = Cameras.get_intrinsics_matrices(prepared).to(device)  # nerfstudio's matrix, made once
    object.__setattr__(prepared, _INTRINSICS, intrinsics)
    object.__setattr__(prepared, "width", prepared.width.cpu())
    object.__setattr__(prepared, "height", prepared.height.cpu())
    return prepared


class StepCameras:
    """The training cameras as `StepCamera`s, prepared at their first use (see the module docstring)."""

    def __init__(self, cameras: Cameras, device: Union[torch.device, str]) -> None:
        assert len(cameras.shape) == 1, "one batch dimension of training cameras"
        self._cameras, self._device = cameras, device
        self._prepared: List[Optional[StepCamera]] = [None] * len(cameras)

    def __call__(self, idx: int) -> StepCamera:
        """A shallow copy of view `idx`'s camera, with its own metadata {"cam_idx": idx}."""
        prepared = self._prepared[idx]
        if prepared is None:
            prepared = self._prepared[idx] = step_camera(self._cameras, idx, self._device)
        camera = copy.copy(prepared)
        metadata: Dict = dict(prepared.metadata or {})
        metadata["cam_idx"] = idx
        object.__setattr__(camera, "metadata", metadata)
        return camera
