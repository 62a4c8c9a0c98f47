"""A one-GPU run's first compile in a child process (igs2gs/background_compile.py), on the CPU."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import igs2gs.igs2gs_pipeline as pipeline_module
from igs2gs.background_compile import CHILD_GPU_GIB, NICE, BackgroundCompile, compiles_aside, run_uncompiled
from igs2gs.editor import EditSettings
from igs2gs.igs2gs_pipeline import IGS2GSPipelineConfig
from tests.test_pipeline import InvertEditor, InvertEditorPipeline, make_trainer
from tests.test_saved_compile import compile_piece_by_piece, fixed_edit
from tests.tiny_ip2p import tiny_editor

SETTINGS = EditSettings(prompt="turn it blue", diffusion_steps=3)
PLAN = ([(64, 64)], 2)


class MarkingEditor(InvertEditor):
    """Stands in for a compiling editor: its warm-up "compiles" it (after `config.compile_s`) and writes
    `config.marker`, as saving the compiled pieces would."""

    def __init__(self, config) -> None:
        super().__init__()
        self.config, self.compiling = config, True

    def edit(self, renders, originals, settings, generator=None):
        time.sleep(self.config.compile_s)
        return super().edit(renders, originals, settings, generator)

    def stop_compiling(self) -> None:
        self.compiling = False
        Path(self.config.marker).write_text(f"{os.getpid()}")


def marking_editor(config, device):
    return MarkingEditor(config)


def tiny_compiled_editor(config, device):
    """The tiny InstructPix2Pix with its pieces kept whole in `config.cache`, as a compiling child builds it."""
    editor = tiny_editor(device=device)
    compile_piece_by_piece(editor, Path(config.cache))
    return editor


def _options(tmp_path: Path, compile_s: float = 0.0) -> SimpleNamespace:
    return SimpleNamespace(edit_max_side=0, compile_s=compile_s, marker=str(tmp_path / "compiled"))


def test_the_child_compiles_for_the_plan_then_exits_by_itself(tmp_path):
    process = BackgroundCompile(_options(tmp_path), "cpu", builder=marking_editor)
    process.plan(*PLAN, SETTINGS)
    process._child.process.join(60)
    assert process.compiled and process._child.process.exitcode == 0
    assert int((tmp_path / "compiled").read_text()) == process._child.process.pid, "compiled in the child"
    process.close()


def test_the_child_runs_at_a_lower_cpu_priority(tmp_path):
    process = BackgroundCompile(_options(tmp_path), "cpu", builder=marking_editor)  # waits for its plan
    try:
        child = process._child.process.pid
        assert os.getpriority(os.PRIO_PROCESS, child) == min(19, os.getpriority(os.PRIO_PROCESS, 0) + NICE)
    finally:
        process.close()
    assert not process.alive


def test_a_run_that_ends_normally_waits_for_the_compile(tmp_path):
    process = BackgroundCompile(_options(tmp_path, compile_s=3.0), "cpu", builder=marking_editor)
    process.plan(*PLAN, SETTINGS)
    process.close(finish_compile=True)
    assert process.compiled and (tmp_path / "compiled").exists()
    assert process._child.process.exitcode == 0


def test_a_run_that_stops_otherwise_stops_the_compile(tmp_path):
    process = BackgroundCompile(_options(tmp_path, compile_s=30.0), "cpu", builder=marking_editor)
    process.plan(*PLAN, SETTINGS)
    started = time.monotonic()
    process.close()
    assert time.monotonic() - started < 20, "not waited for"
    assert not process.compiled and process._child.process.exitcode != 0
    assert not (tmp_path / "compiled").exists()


def test_a_compile_in_the_child_serves_this_process_next_time(tmp_path):
    """The pieces a child compiled and saved are the ones an editor built here asks for: the key of a saved piece
    (versions, source, global state, modules) is the same in a spawned child and in the training process."""
    here = tiny_compiled_editor(SimpleNamespace(cache=tmp_path), "cpu")
    assert compiles_aside(here, *PLAN), "nothing saved yet: the compile goes to a child"
    process = BackgroundCompile(SimpleNamespace(edit_max_side=0, cache=str(tmp_path)), "cpu", tiny_compiled_editor)
    process.plan(*PLAN, SETTINGS)
    process.close(finish_compile=True)
    assert process.compiled
    later = tiny_compiled_editor(SimpleNamespace(cache=tmp_path), "cpu")
    assert later.saved_plan_ready(*PLAN) and not compiles_aside(later, *PLAN)
    assert not later.saved_plan_ready([(32, 32)], 2), "only the plan the child compiled"


def test_only_an_editor_that_keeps_its_pieces_compiles_aside(tmp_path):
    plain = tiny_editor()
    assert not compiles_aside(plain, *PLAN), "an uncompiled editor"
    kept = tiny_compiled_editor(SimpleNamespace(cache=tmp_path), "cpu")
    assert compiles_aside(kept, *PLAN)
    kept.stop_compiling()
    assert not compiles_aside(kept, *PLAN), "an editor that no longer compiles"


def test_an_editor_set_back_to_uncompiled_edits_as_the_default_one(tmp_path):
    editor = tiny_compiled_editor(SimpleNamespace(cache=tmp_path), "cpu")
    editor.pad_views_to = 4
    run_uncompiled(editor, IGS2GSPipelineConfig(ip2p_compile=True))
    assert not editor.compiling and editor._compiled_pieces() == [] and editor.pad_views_to == 0
    torch.testing.assert_close(fixed_edit(editor, SETTINGS), fixed_edit(tiny_editor(), SETTINGS))
    saved = tmp_path / "igs2gs-saved"
    assert not (saved.exists() and any(saved.iterdir())), "nothing compiled or saved by its edit"


class AsideEditor(InvertEditor):
    """Stands in for a compiling InstructPix2Pix whose pieces no earlier run saved."""

    compiling, keeps_compiled_pieces = True, True

    def __init__(self) -> None:
        super().__init__()
        self.built_on = threading.get_ident()
        self.uncompiled = False

    def saved_plan_ready(self, sizes, batch_size) -> bool:
        return False


class AsidePipeline(InvertEditorPipeline):
    def build_editor(self):
        return AsideEditor()


def test_a_run_edits_uncompiled_while_a_child_compiles_for_later_runs(
    splatfacto_run, tmp_path, random_lpips_backbones, monkeypatch, capsys
):
    # Building ahead is for CUDA devices; here it is switched on for the CPU to run the pipeline's wiring.
    monkeypatch.setattr(pipeline_module, "builds_editor_ahead", lambda device: True)
    monkeypatch.setattr(pipeline_module, "run_uncompiled", lambda editor, config: setattr(editor, "uncompiled", True))
    monkeypatch.setattr(AsidePipeline, "process_editor_builder", marking_editor)  # the child builds this editor
    # a compile that outlasts the run (its child's start, 14 steps), which waits for it at its last step
    monkeypatch.setattr(pipeline_module, "editor_options", lambda config: _options(tmp_path, compile_s=15.0))
    trainer = make_trainer(splatfacto_run, tmp_path)
    trainer.config.pipeline._target = AsidePipeline
    trainer.setup()  # again, with this pipeline
    pipeline = trainer.pipeline
    editor, process = pipeline.editor, pipeline.background_compile
    assert process is not None and process.alive and editor.uncompiled
    assert editor.calls == [], "no warm-up edit here: the child compiles"
    trainer.train()  # on the CPU rounds edit in the training step (no background edits): the last step still waits
    views = pipeline.datamanager.num_train_views
    assert sum(call[0][0] for call in editor.calls) == views, "the run's edits, uncompiled, in this process"
    assert process.compiled and not process.alive and process._child.process.exitcode == 0
    assert (tmp_path / "compiled").exists(), "the compile finished for later runs"
    out = capsys.readouterr().out
    assert "no earlier run compiled InstructPix2Pix" in out  # (the console wraps longer lines)
    assert "training is done; the background compile of InstructPix2Pix" in out


class FakeCudaEditor(AsideEditor):
    device = torch.device("cuda", 0)


@pytest.mark.parametrize(("free_gib", "aside"), [(CHILD_GPU_GIB + 1, True), (CHILD_GPU_GIB - 1, False)])
def test_a_gpu_without_room_for_the_child_compiles_in_the_training_process(monkeypatch, capsys, free_gib, aside):
    asked: list = []

    def mem_get_info(device):
        asked.append(device)
        return int(free_gib * 2**30), 80 * 2**30

    monkeypatch.setattr(torch.cuda, "mem_get_info", mem_get_info)
    assert compiles_aside(FakeCudaEditor(), *PLAN) is aside
    assert asked == [torch.device("cuda", 0)], "the editor's GPU"
    assert ("compiles in this process at start-up instead" in capsys.readouterr().out) is not aside
