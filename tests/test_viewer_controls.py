"""The viewer's edit controls, in-process on CPU: discovery, settings that reach the next edit, "edit now"."""

from __future__ import annotations

import copy
from typing import List, Optional

import pytest
import torch
from nerfstudio.engine.callbacks import TrainingCallbackLocation
from nerfstudio.viewer.utils import parse_object
from nerfstudio.viewer.viewer_elements import ViewerElement

from igs2gs.editor import EditSettings
from igs2gs.igs2gs_config import igs2gs_method
from igs2gs.igs2gs_pipeline import IGS2GSPipeline
from igs2gs.viewer_controls import EditControls, parse_scale
from tests.test_pipeline import make_trainer


class RecordingEditor:
    """Returns the original photos and records the settings of every edit; `on_edit` plays the user."""

    def __init__(self) -> None:
        self.settings: List[EditSettings] = []
        self.on_edit = lambda count: None

    def edit(self, renders, originals, settings: EditSettings, generator: Optional[torch.Generator] = None):
        self.settings.append(settings)
        self.on_edit(len(self.settings))
        return originals.clone()


def make_pipeline(splatfacto_run, tmp_path, gs_steps: int = 50, iterations: int = 14) -> IGS2GSPipeline:
    """The pipeline of an in-process trainer (steps 200.. from the step-199 checkpoint), editor not yet built."""
    trainer = make_trainer(splatfacto_run, tmp_path, iterations=iterations)
    pipeline = trainer.pipeline
    assert isinstance(pipeline, IGS2GSPipeline)
    pipeline.config.gs_steps = gs_steps
    pipeline.trainer = trainer  # for the tests that train
    return pipeline


def use_recording_editor(pipeline: IGS2GSPipeline) -> RecordingEditor:
    pipeline.__dict__["editor"] = RecordingEditor()  # what the cached property `editor` would hold
    return pipeline.editor


def train_step(pipeline: IGS2GSPipeline, step: int) -> None:
    """One training step of the pipeline's trainer, callbacks included (they hand the model its optimizers)."""
    trainer = pipeline.trainer
    for callback in trainer.callbacks:
        callback.run_callback_at_location(step, location=TrainingCallbackLocation.BEFORE_TRAIN_ITERATION)
    trainer.train_iteration(step)
    for callback in trainer.callbacks:
        callback.run_callback_at_location(step, location=TrainingCallbackLocation.AFTER_TRAIN_ITERATION)


def set_value(element: ViewerElement, value) -> None:
    """What the viewer does when the user edits an element: set its value, then call its hook."""
    element.value = value
    element.cb_hook(element)


def test_the_viewer_finds_the_controls_without_building_the_editor(splatfacto_run, tmp_path, random_lpips_backbones):
    pipeline = make_pipeline(splatfacto_run, tmp_path)
    found = {path: element.name for path, element in parse_object(pipeline, ViewerElement, "Custom Elements")}
    assert found == {
        "Custom Elements/igs2gs/a_prompt": "Prompt",
        "Custom Elements/igs2gs/b_guidance_scale": "Text guidance",
        "Custom Elements/igs2gs/c_image_guidance_scale": "Image guidance",
        "Custom Elements/igs2gs/d_edit_now": "Edit all views now",
        "Custom Elements/igs2gs/e_status": "Status",
    }
    assert "editor" not in pipeline.__dict__, "the viewer's attribute walk built the editor"
    assert not [key for key in pipeline.state_dict() if key.startswith("igs2gs.")]


def test_changed_controls_apply_from_the_next_edit(splatfacto_run, tmp_path, random_lpips_backbones):
    # Steps 200..209: the round starts at 201 and reaches view 8, so the editor is called at least twice,
    # whether it edits one view per call or several ahead.
    pipeline = make_pipeline(splatfacto_run, tmp_path, iterations=10)
    controls = pipeline.igs2gs
    editor = use_recording_editor(pipeline)

    def user_changes_settings(calls: int) -> None:
        if calls == 1:  # while the first edit runs
            set_value(controls.a_prompt, "  make it blue ")
            set_value(controls.b_guidance_scale, 7.5)
            set_value(controls.c_image_guidance_scale, 2.0)

    editor.on_edit = user_changes_settings
    pipeline.trainer.train()
    first, later = editor.settings[0], editor.settings[1:]
    assert later, "the editor was called only once"
    assert (first.prompt, first.guidance_scale, first.image_guidance_scale) == ("invert it", 12.5, 1.5)
    assert {(s.prompt, s.guidance_scale, s.image_guidance_scale) for s in later} == {("make it blue", 7.5, 2.0)}


def test_invalid_values_are_refused_and_shown_back(splatfacto_run, tmp_path, random_lpips_backbones):
    pipeline = make_pipeline(splatfacto_run, tmp_path)
    controls = pipeline.igs2gs
    set_value(controls.b_guidance_scale, -3.0)
    set_value(controls.c_image_guidance_scale, float("nan"))
    set_value(controls.a_prompt, "   ")
    assert (pipeline.config.guidance_scale, pipeline.config.image_guidance_scale) == (12.5, 1.5)
    assert controls.b_guidance_scale.value == 12.5 and controls.c_image_guidance_scale.value == 1.5
    assert pipeline.config.prompt == "invert it" == controls.a_prompt.value


def test_edit_now_starts_a_round_at_the_next_step(splatfacto_run, tmp_path, random_lpips_backbones):
    pipeline = make_pipeline(splatfacto_run, tmp_path, gs_steps=10_000)  # no scheduled round near step 300
    editor = use_recording_editor(pipeline)
    train_step(pipeline, 300)
    assert not pipeline.edit_round.active and not editor.settings
    set_value(pipeline.igs2gs.d_edit_now, True)
    train_step(pipeline, 301)
    assert pipeline.edit_round.active and pipeline.edit_round.cursor == 1
    assert len(editor.settings) == 1 and pipeline.edit_round.rounds_started == 1
    assert pipeline.igs2gs.e_status.value == "round 1 of 1: 1/10 views"
    train_step(pipeline, 302)  # the request was taken once: the round goes on, no restart
    assert pipeline.edit_round.cursor == 2 and pipeline.edit_round.rounds_started == 1


def test_no_controls_and_no_editor_when_viewing(splatfacto_run, random_lpips_backbones):
    config = copy.deepcopy(igs2gs_method.config.pipeline)
    config.datamanager.data = splatfacto_run["scene"]
    pipeline = config.setup(device="cpu", test_mode="test")  # as ns-viewer and ns-render build it
    assert pipeline.igs2gs is None
    assert parse_object(pipeline, ViewerElement, "Custom Elements") == []
    assert "editor" not in pipeline.__dict__


@pytest.mark.parametrize(
    "value, expected", [(7.5, 7.5), ("2", 2.0), (0, None), (-1.0, None), (float("inf"), None), ("x", None)]
)
def test_parse_scale(value, expected):
    assert parse_scale(value) == expected


def test_controls_hold_no_state_in_checkpoints():
    from igs2gs.igs2gs_pipeline import IGS2GSPipelineConfig

    controls = EditControls(IGS2GSPipelineConfig())
    assert controls.state_dict() == {} and list(controls.parameters()) == []
    assert controls.take_round_request() is False
    set_value(controls.d_edit_now, True)
    assert controls.take_round_request() is True and controls.take_round_request() is False
