"""The editor built and warmed up before training (editor_warm_up.py) and compiled only then (ip2p_speed.py)."""

from __future__ import annotations

import threading

import torch

import igs2gs.igs2gs_pipeline as pipeline_module
from igs2gs.editor import EditSettings
from igs2gs.editor_warm_up import (
    EAGER_WARM_UP_STEPS,
    WARM_UP_STEPS,
    builds_editor_ahead,
    warm_up_edit,
    warm_up_editor,
)
from igs2gs.ip2p_speed import CompiledThenRunOnly
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


class CompilingEditor(RecordingEditor):
    def __init__(self) -> None:
        super().__init__()
        self.compiling = True

    def stop_compiling(self) -> None:
        self.compiling = False


def test_only_an_editor_that_compiles_is_warmed_up_then_stops_compiling():
    eager = RecordingEditor()
    warm_up_editor(eager, [(48, 64)], 2, EditSettings(prompt="x"), "cpu")
    assert eager.calls == []  # in the training process its first edit runs beside training
    compiling = CompilingEditor()
    warm_up_editor(compiling, [(48, 64), (32, 32)], 2, EditSettings(prompt="x"), "cpu")
    assert [shape for shape, _ in compiling.calls] == [(2, 3, 48, 64), (2, 3, 32, 32)]
    assert not compiling.compiling


class StepsEditor(RecordingEditor):
    def edit(self, renders, originals, settings, generator=None):
        self.calls.append((tuple(renders.shape), settings.diffusion_steps))
        return renders


class CompilingStepsEditor(StepsEditor, CompilingEditor):
    pass


def test_an_eager_editor_is_warmed_up_when_asked_with_one_step_at_each_size():
    eager = StepsEditor()
    warm_up_editor(eager, [(48, 64), (32, 32)], 2, EditSettings(prompt="x"), "cpu", eager=True)
    assert eager.calls == [((2, 3, 48, 64), EAGER_WARM_UP_STEPS), ((2, 3, 32, 32), EAGER_WARM_UP_STEPS)]
    compiling = CompilingStepsEditor()
    warm_up_editor(compiling, [(48, 64)], 2, EditSettings(prompt="x"), "cpu", eager=True)
    assert compiling.calls == [((2, 3, 48, 64), WARM_UP_STEPS)] and not compiling.compiling


def test_an_edit_process_warms_its_eager_editor_up_on_a_gpu_only(monkeypatch):
    import igs2gs.edit_process as edit_process
    import igs2gs.editor_warm_up as editor_warm_up

    asked = []
    monkeypatch.setattr(editor_warm_up, "warm_up_editor", lambda *args, eager=False: asked.append((args[-1], eager)))
    plan = ([(48, 64)], 2, EditSettings(prompt="x"))
    edit_process._warm_up(RecordingEditor(), plan, "cuda:1")
    edit_process._warm_up(RecordingEditor(), plan, "cpu")
    assert asked == [("cuda:1", True), ("cpu", False)]


def test_only_cuda_editors_are_built_ahead():
    assert not builds_editor_ahead("cpu")
    assert builds_editor_ahead("cuda:1")


def test_compiled_functions_compile_only_until_told_to_stop():
    compiled_graphs, graph_runs = [], []

    def backend(graph_module, example_inputs):  # records each compile and each run of a compiled graph
        compiled_graphs.append([tuple(x.shape) for x in example_inputs if isinstance(x, torch.Tensor)])

        def run(*args):
            graph_runs.append(len(compiled_graphs))
            return graph_module.forward(*args)

        return run

    def step(x, scale):
        return (x * scale).sin()

    compiled = CompiledThenRunOnly(torch.compile(step, backend=backend, dynamic=False))
    x = torch.rand(2, 3)
    torch.testing.assert_close(compiled(x, 2.0), step(x, 2.0))  # the warm-up compiles this call
    compiled.stop_compiling()
    assert len(compiled_graphs) == 1 and graph_runs == [1]
    torch.testing.assert_close(compiled(x + 1, 2.0), step(x + 1, 2.0))  # fits the compiled graph: runs it
    assert graph_runs == [1, 1]
    for args in [(torch.rand(4, 3), 2.0), (x, 3.0), (x.double(), 2.0), (torch.rand(3, 2).t(), 2.0)]:
        torch.testing.assert_close(compiled(*args), step(*args))  # shape, constant, dtype, layout: eager
    assert len(compiled_graphs) == 1 and graph_runs == [1, 1], "nothing compiled after the warm-up"


class AheadInvertPipeline(InvertEditorPipeline):
    def build_editor(self):
        editor = InvertEditor()
        editor.built_on = threading.get_ident()
        editor.compiling, editor.stopped_compiling_after = True, None  # stands in for a compiling editor

        def stop_compiling():
            editor.compiling, editor.stopped_compiling_after = False, len(editor.calls)

        editor.stop_compiling = stop_compiling
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


def test_a_two_step_warm_up_compiles_what_every_step_of_a_longer_edit_runs():
    """The warm-up edit runs WARM_UP_STEPS denoising steps; afterwards every step of a longer edit fits a graph
    compiled there (none runs eagerly), and the edit is the eager editor's."""
    from tests.tiny_ip2p import tiny_editor

    compiled_graphs, graph_runs = [], []

    def backend(graph_module, example_inputs):
        compiled_graphs.append(len(example_inputs))

        def run(*args):
            graph_runs.append(len(compiled_graphs))
            return graph_module.forward(*args)

        return run

    torch._dynamo.reset()
    editor = tiny_editor()
    editor._step = CompiledThenRunOnly(torch.compile(editor.denoise_step, backend=backend, dynamic=False))
    settings = EditSettings(prompt="turn it blue", diffusion_steps=5)
    warm_up_editor(editor, [(64, 64)], 2, settings, "cpu")
    assert not editor.compiling and len(graph_runs) == WARM_UP_STEPS  # not the settings' 5 steps
    runs = len(graph_runs)
    renders, originals = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    generators = [torch.Generator().manual_seed(seed) for seed in (1, 2)]
    with torch.no_grad():
        out = editor.edit(renders, originals, settings, generator=generators)
    assert len(graph_runs) - runs == 5, "a step of the edit did not fit the graphs the warm-up compiled"
    eager, generators = tiny_editor(), [torch.Generator().manual_seed(seed) for seed in (1, 2)]
    with torch.no_grad():
        expected = eager.edit(renders, originals, settings, generator=generators)
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)
