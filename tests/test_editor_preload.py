"""The editor built on a thread of its own while the trainer starts up (igs2gs/editor_preload.py)."""

from __future__ import annotations

import threading

import pytest
import torch

import igs2gs.igs2gs_pipeline as pipeline_module
from igs2gs.editor import EditSettings
from igs2gs.editor_preload import EditorPreload, preloads_editor, warm_up_edit
from igs2gs.ip2p import IP2PLoadError
from tests.test_pipeline import InvertEditor, InvertEditorPipeline, make_trainer


class Editor:
    def __init__(self) -> None:
        self.calls: list = []

    def edit(self, renders, originals, settings, generator=None):
        self.calls.append((tuple(renders.shape), generator, threading.get_ident()))
        return renders


def test_the_editor_is_built_and_warmed_up_on_another_thread():
    built_on, warmed = [], []

    def build():
        built_on.append(threading.get_ident())
        return Editor()

    preload = EditorPreload(build, warm_up=warmed.append)
    editor = preload.result(timeout=10)
    assert preload.done and built_on and built_on[0] != threading.get_ident()
    assert warmed == [editor] and preload.warm_up_error is None
    assert preload.result() is editor  # every user gets the same editor


def test_the_first_user_waits_for_the_build_and_can_time_out():
    release = threading.Event()
    preload = EditorPreload(lambda: release.wait(10) and Editor())
    with pytest.raises(TimeoutError):
        preload.result(timeout=0.05)
    assert not preload.done
    release.set()
    assert isinstance(preload.result(timeout=10), Editor)


def test_a_build_error_reaches_every_user_of_the_editor():
    def build():
        raise IP2PLoadError("InstructPix2Pix weights not found")

    preload = EditorPreload(build, warm_up=lambda editor: pytest.fail("no warm-up without an editor"))
    for _ in range(2):
        with pytest.raises(IP2PLoadError, match="weights not found"):
            preload.result(timeout=10)


def test_a_failed_warm_up_still_hands_out_the_editor():
    editor = Editor()

    def warm_up(_):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    preload = EditorPreload(lambda: editor, warm_up=warm_up)
    assert preload.result(timeout=10) is editor
    assert isinstance(preload.warm_up_error, torch.cuda.OutOfMemoryError)


def test_the_warm_up_edits_a_batch_as_a_round_does():
    editor = Editor()
    warm_up_edit(editor, (48, 64), 3, EditSettings(prompt="x"), "cpu")
    ((shape, generators, _),) = editor.calls
    assert shape == (3, 3, 48, 64) and len(generators) == 3  # one generator per view, as rounds pass them
    warm_up_edit(editor, (48, 64), 1, EditSettings(prompt="x"), "cpu")
    assert isinstance(editor.calls[1][1], torch.Generator)


def test_only_cuda_editors_are_built_ahead():
    assert not preloads_editor("cpu")
    assert preloads_editor("cuda:1")


class PreloadedInvertPipeline(InvertEditorPipeline):
    def build_editor(self):
        editor = InvertEditor()
        editor.built_on = threading.get_ident()
        return editor


def test_a_run_uses_the_preloaded_editor(splatfacto_run, tmp_path, random_lpips_backbones, monkeypatch):
    # Preloading is for CUDA devices; here it is switched on for the CPU to run the pipeline's wiring.
    monkeypatch.setattr(pipeline_module, "preloads_editor", lambda device: True)
    trainer = make_trainer(splatfacto_run, tmp_path)
    trainer.config.pipeline._target = PreloadedInvertPipeline
    trainer.setup()  # again, with this pipeline
    pipeline = trainer.pipeline
    assert pipeline._editor_preload is not None
    warmed_editor = pipeline._editor_preload.result(timeout=60)
    warm_up_call = warmed_editor.calls[0]
    views = pipeline.datamanager.num_train_views
    assert warm_up_call[0] == (min(pipeline.config.edit_batch_size, views), 3, 64, 64)  # a round's batch and size
    trainer.train()
    assert pipeline.editor is warmed_editor and warmed_editor.built_on != threading.get_ident()
    assert sum(call[0][0] for call in warmed_editor.calls[1:]) == views  # then the round's edits, each view once
    assert pipeline.datamanager.edited_views == set(range(views))
