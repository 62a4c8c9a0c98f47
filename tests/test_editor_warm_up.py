"""The editor built and warmed up before training (editor_warm_up.py) and compiled only then (ip2p_speed.py)."""

from __future__ import annotations

import threading

import torch

import igs2gs.igs2gs_pipeline as pipeline_module
from igs2gs.editor import EditSettings
from igs2gs.editor_warm_up import builds_editor_ahead, warm_up_edit
from igs2gs.ip2p_speed import CompiledForInputs
from tests.test_pipeline import InvertEditor, InvertEditorPipeline, make_trainer


class RecordingEditor:
    def __init__(self) -> None:
        self.calls: list = []

    def edit(self, renders, originals, settings, generator=None):
        self.calls.append((tuple(renders.shape), generator))
        return renders


def test_the_warm_up_edits_a_batch_as_a_round_does():
    editor = RecordingEditor()
    warm_up_edit(editor, (48, 64), 3, EditSettings(prompt="x"), "cpu")
    ((shape, generators),) = editor.calls
    assert shape == (3, 3, 48, 64) and len(generators) == 3  # one generator per view, as rounds pass them
    warm_up_edit(editor, (48, 64), 1, EditSettings(prompt="x"), "cpu")
    assert isinstance(editor.calls[1][1], torch.Generator)


def test_only_cuda_editors_are_built_ahead():
    assert not builds_editor_ahead("cpu")
    assert builds_editor_ahead("cuda:1")


def test_compiled_functions_compile_only_until_told_to_stop():
    eager_calls, compiled_calls = [], []

    def fn(x, scale):
        eager_calls.append(tuple(x.shape))
        return x * scale

    def compiled(x, scale):  # stands in for torch.compile(fn): a call with new inputs would compile
        compiled_calls.append(tuple(x.shape))
        return x * scale

    step = CompiledForInputs(fn, compiled)
    step(torch.ones(2, 3), 2.0)  # the warm-up compiles this input
    step.stop_compiling()
    assert torch.equal(step(torch.ones(2, 3), 2.0), torch.full((2, 3), 2.0))
    assert compiled_calls == [(2, 3), (2, 3)] and eager_calls == []
    step(torch.ones(4, 3), 2.0)  # a new shape: eager
    step(torch.ones(2, 3), 3.0)  # a new constant would also recompile: eager
    step(torch.ones(2, 3, dtype=torch.float64), 2.0)  # a new dtype: eager
    assert compiled_calls == [(2, 3), (2, 3)] and eager_calls == [(4, 3), (2, 3), (2, 3)]


class AheadInvertPipeline(InvertEditorPipeline):
    def build_editor(self):
        editor = InvertEditor()
        editor.built_on = threading.get_ident()
        editor.stopped_compiling_after = None
        editor.stop_compiling = lambda: setattr(editor, "stopped_compiling_after", len(editor.calls))
        return editor


def test_a_run_builds_and_warms_up_its_editor_with_the_pipeline(
    splatfacto_run, tmp_path, random_lpips_backbones, monkeypatch
):
    # Building ahead is for CUDA devices; here it is switched on for the CPU to run the pipeline's wiring.
    monkeypatch.setattr(pipeline_module, "builds_editor_ahead", lambda device: True)
    trainer = make_trainer(splatfacto_run, tmp_path)
    trainer.config.pipeline._target = AheadInvertPipeline
    trainer.setup()  # again, with this pipeline
    pipeline = trainer.pipeline
    assert "editor" in vars(pipeline), "the editor exists before training"
    editor = pipeline.editor
    views = pipeline.datamanager.num_train_views
    assert editor.built_on == threading.get_ident(), "built on the main thread, before other threads run"
    batch = (min(pipeline.config.edit_batch_size, views), 3, 64, 64)  # a round's batch at the scene's size
    assert editor.calls == [(batch, batch, "invert it")]
    assert editor.stopped_compiling_after == 1, "compiling stops after the warm-up edit"
    trainer.train()
    assert pipeline.editor is editor
    assert sum(call[0][0] for call in editor.calls[1:]) == views  # then the round's edits, each view once
    assert pipeline.datamanager.edited_views == set(range(views))
