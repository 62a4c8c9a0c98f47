"""Live edit controls in nerfstudio's viewer: the prompt, both guidance scales and an "edit now" button.

nerfstudio 1.1.5's viewer finds `ViewerElement`s by reading the pipeline's public attributes and
recursing into `nn.Module`s (`viewer/utils.py::parse_object`); each attribute path becomes a folder
label. `EditControls` is therefore an `nn.Module` without parameters (it adds nothing to checkpoints),
held by the pipeline under the attribute `igs2gs`, so the controls appear under "Custom Elements/igs2gs".

The callbacks write into the pipeline config, which the pipeline reads at every edit
(`IGS2GSPipeline.edit_settings`), so a change applies from the next edit. The viewer runs callbacks
in its own thread under the trainer's `train_lock`, between training steps.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional

from nerfstudio.utils.rich_utils import CONSOLE
from nerfstudio.viewer.viewer_elements import ViewerButton, ViewerNumber, ViewerText
from torch import nn

if TYPE_CHECKING:
    from igs2gs.igs2gs_pipeline import IGS2GSPipelineConfig


class EditControls(nn.Module):
    """Viewer elements bound to a pipeline config; `take_round_request` tells whether "edit now" was pressed."""

    def __init__(self, config: IGS2GSPipelineConfig) -> None:
        super().__init__()
        self.config = config
        self._round_requested = False
        # Attribute names sort the elements in the viewer (parse_object walks dir(), which is alphabetical).
        self.a_prompt = ViewerText(
            "Prompt", config.prompt, cb_hook=self._set_prompt, hint="The edit instruction; applies from the next edit"
        )
        self.b_guidance_scale = ViewerNumber(
            "Text guidance",
            config.guidance_scale,
            cb_hook=lambda element: self._set_scale("guidance_scale", element),
            hint="How strongly the edit follows the prompt (> 0)",
        )
        self.c_image_guidance_scale = ViewerNumber(
            "Image guidance",
            config.image_guidance_scale,
            cb_hook=lambda element: self._set_scale("image_guidance_scale", element),
            hint="How closely the edit keeps the original photo (> 0)",
        )
        self.d_edit_now = ViewerButton("Edit all views now", cb_hook=self._request_round)
        self.e_status = ViewerText("Status", "waiting for the first round", disabled=True)

    def _set_prompt(self, element: ViewerText) -> None:
        prompt = element.value.strip()
        if not prompt:
            CONSOLE.log("igs2gs: an empty prompt is ignored; the prompt stays " + repr(self.config.prompt))
            element.value = self.config.prompt
            return
        if prompt != self.config.prompt:
            self.config.prompt = prompt
            CONSOLE.log(f"igs2gs: prompt set to {prompt!r} from the viewer (applies from the next edit)")

    def _set_scale(self, field: str, element: ViewerNumber) -> None:
        value = parse_scale(element.value)
        if value is None:
            old = getattr(self.config, field)
            CONSOLE.log(f"igs2gs: {field} must be a number > 0, got {element.value!r}; it stays {old}")
            element.value = old
            return
        if value != getattr(self.config, field):
            setattr(self.config, field, value)
            CONSOLE.log(f"igs2gs: {field} set to {value} from the viewer (applies from the next edit)")

    def _request_round(self, element: ViewerButton) -> None:
        self._round_requested = True
        CONSOLE.log("igs2gs: edit round requested from the viewer; it starts at the next step")

    def take_round_request(self) -> bool:
        """True once after "Edit all views now" was pressed (the request is then cleared)."""
        requested, self._round_requested = self._round_requested, False
        return requested

    def show_status(self, text: str) -> None:
        """Show a one-line round status in the viewer (no-op without a viewer)."""
        self.e_status.value = text


def parse_scale(value: object) -> Optional[float]:
    """A guidance scale as a float, or None when it is not a finite number > 0."""
    try:
        scale = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return scale if math.isfinite(scale) and scale > 0 else None
