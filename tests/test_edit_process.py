"""InstructPix2Pix in a process of its own (igs2gs/edit_process.py), with stand-in editors on the CPU."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import igs2gs.igs2gs_pipeline as pipeline_module
from igs2gs.edit_process import EditProcess, EditProcessError, _LaunchClock
from igs2gs.edit_worker import EditJob
from igs2gs.editor import EditSettings
from igs2gs.fast_edits import accepts_view_ids
from igs2gs.ip2p import IP2PLoadError
from tests.test_pipeline import InvertEditor, InvertEditorPipeline, make_trainer

SETTINGS = EditSettings(prompt="invert it")
CONFIG = SimpleNamespace(edit_max_side=0)


class PidEditor(InvertEditor):
    """Inverts the originals and writes its process id into the first pixel; counts its calls there too. It stands
    in for a compiling editor, so the child warms it up."""

    compiling = True

    def stop_compiling(self) -> None:
        self.compiling = False

    def edit(self, renders, originals, settings, generator=None):
        out = super().edit(renders, originals, settings, generator)
        out[:, 0, 0, 0] = os.getpid()
        out[:, 1, 0, 0] = len(self.calls)  # the warm-up was call 1
        return out


def pid_editor(config, device):
    return PidEditor()


def failing_builder(config, device):
    raise ValueError("no InstructPix2Pix weights here")


class UnloadableEditor(InvertEditor):
    def edit(self, renders, originals, settings, generator=None):
        if renders.shape[0] != 2:  # not the warm-up
            raise IP2PLoadError("weights unreachable")
        return super().edit(renders, originals, settings, generator)


def unloadable_editor(config, device):
    return UnloadableEditor()


class DyingEditor(InvertEditor):
    def edit(self, renders, originals, settings, generator=None):
        if renders.shape[0] != 2:
            os._exit(3)
        return super().edit(renders, originals, settings, generator)


def dying_editor(config, device):
    return DyingEditor()


class SwitchingEditor(InvertEditor):
    """Writes 1 into its second pixel when compiled and 0 when not; a compiling editor counts as compiled only
    after its warm-up."""

    def __init__(self, compiled: bool) -> None:
        super().__init__()
        self.compiled = compiled
        self.compiling = compiled

    def stop_compiling(self) -> None:
        self.compiling = False

    def edit(self, renders, originals, settings, generator=None):
        out = super().edit(renders, originals, settings, generator)
        out[:, 1, 0, 0] = float(self.compiled and not self.compiling)
        return out


def slowly_compiled_editor(config, device):
    if config.ip2p_compile:  # the compiling child
        time.sleep(4.0)
    return SwitchingEditor(compiled=config.ip2p_compile)


def uncompilable_editor(config, device):
    if config.ip2p_compile:
        raise RuntimeError("inductor failed")
    return SwitchingEditor(compiled=False)


EXIT_S = 1.5
"""How long a `slowly_exiting_editor`'s child takes to exit."""


def slowly_exiting_editor(config, device):
    """A child that takes EXIT_S to exit once it returns, as a CUDA child tearing down its context does."""
    from multiprocessing import util

    util.Finalize(None, time.sleep, args=(EXIT_S,), exitpriority=100)  # run by the child's exit, after _serve
    return InvertEditor()


def editor_with_a_slow_exit_handler(config, device):
    """A child whose interpreter teardown would take EXIT_S * 4 (an exit handler, as torch's and diffusers' are)."""
    import atexit

    atexit.register(time.sleep, EXIT_S * 4)
    return InvertEditor()


def _jobs(views):
    torch.manual_seed(0)
    return [
        EditJob(view, torch.rand(1, 3, 16, 24), torch.rand(1, 3, 16, 24), SETTINGS, seed=view, ready=None)
        for view in views
    ]


@contextlib.contextmanager
def _process(builder, config=CONFIG, **kwargs):
    process = EditProcess(config, "cpu", builder=builder, **kwargs)
    process.plan([(16, 24)], 2, SETTINGS)
    try:
        yield process
    finally:
        process.close()


def test_jobs_are_edited_in_the_child_after_its_warm_up():
    with _process(pid_editor) as process:
        jobs = _jobs([4, 5, 6])
        images = process(jobs)
        assert len(images) == 3
        for job, image in zip(jobs, images):
            assert image.shape == (1, 3, 16, 24)
            torch.testing.assert_close(image[..., 1:, 1:], 1 - job.original[..., 1:, 1:])
            assert image[0, 0, 0, 0].item() == process._child.process.pid != os.getpid()
            assert image[0, 1, 0, 0].item() == 2  # the child's second editor call: its warm-up came first
        again = process(_jobs([1, 2, 3]))
        assert [image[0, 1, 0, 0].item() for image in again] == [3, 3, 3] and not any(
            image.data_ptr() == first.data_ptr() for image in again for first in images
        ), "each batch's edits are copies: a later batch does not overwrite them"
        assert [len(free) for free in process._batches._free.values()] == [1], "one set of shared buffers, reused"
        assert process.alive
        os.kill(process._child.process.pid, signal.SIGINT)  # Ctrl-C in a terminal reaches the whole process group
        assert len(process(_jobs([7]))) == 1 and process.alive, "the child leaves Ctrl-C to the training process"
    assert not process.alive
    with pytest.raises(EditProcessError, match="closed"):
        process(_jobs([0]))


def test_the_child_says_where_its_time_went_when_it_stops(capfd):
    with _process(pid_editor) as process:
        process(_jobs([0, 1, 2]))
        process(_jobs([3, 4]))
    out = capfd.readouterr().out
    assert "the uncompiled InstructPix2Pix edited 5 views in 2 batches: per view" in " ".join(out.split())
    assert "ms waiting for the next batch" in " ".join(out.split())
    assert "ms of it until the editor's call returned" in " ".join(out.split())


class _ViewEditor:
    def edit(self, renders, originals, settings, generator=None, view_ids=None):  # noqa: ANN001, ANN201
        return renders + 1


def test_the_launch_clock_keeps_the_editors_signature_and_notes_each_return():
    clock = _LaunchClock(_ViewEditor())
    assert accepts_view_ids(clock) and not accepts_view_ids(_LaunchClock(InvertEditor()))
    before = time.perf_counter()
    assert clock.edit(torch.zeros(1), None, None, view_ids=[0]).item() == 1
    assert before <= clock.returned <= time.perf_counter()


def test_a_builder_error_reaches_the_training_process():
    with _process(failing_builder) as process, pytest.raises(ValueError, match="no InstructPix2Pix") as raised:
        process(_jobs([0]))
    assert "raised in the InstructPix2Pix process" in "".join(getattr(raised.value, "__notes__", []))


def test_an_edit_error_the_guard_lets_through_reaches_the_training_process():
    from igs2gs.errors import IGS2GSConfigError

    with _process(unloadable_editor) as process, pytest.raises(IGS2GSConfigError, match="weights unreachable"):
        process(_jobs([0]))


def test_a_child_that_dies_is_reported_with_its_exit_code():
    with _process(dying_editor) as process, pytest.raises(EditProcessError, match="exit code 3"):
        process(_jobs([0]))


class ProcessInvertPipeline(InvertEditorPipeline):
    process_editor_builder = pid_editor

    def build_editor(self):
        raise AssertionError("with ip2p_process the training process builds no editor")


def test_stop_does_not_wait_for_the_children_to_exit_and_join_does():
    process = EditProcess(CONFIG, "cpu", builder=slowly_exiting_editor)
    try:
        assert len(process(_jobs([1, 2]))) == 2
        child = process._child.process
        started = time.monotonic()
        process.stop()
        assert time.monotonic() - started < 0.5 and child.is_alive(), "stop() waited for the child's exit"
        with pytest.raises(EditProcessError, match="closed"):
            process(_jobs([3]))
        process.join()
        assert not child.is_alive() and child.exitcode == 0, "joined after its own exit, not terminated"
        assert time.monotonic() - started >= EXIT_S
        process.join()  # twice is safe
    finally:
        process.close()


def test_a_child_that_is_done_leaves_without_the_interpreters_teardown():
    process = EditProcess(CONFIG, "cpu", builder=editor_with_a_slow_exit_handler)
    try:
        assert [image is not None for image in process(_jobs([1, 2]))] == [True, True]
        child = process._child.process
        started = time.monotonic()
        process.stop()
        process.join()
        assert not child.is_alive() and child.exitcode == 0, "joined after its own exit, not terminated"
        assert time.monotonic() - started < EXIT_S * 2, "the child ran its interpreter's exit handlers"
    finally:
        process.close()


def test_a_run_edits_every_view_in_the_edit_process(splatfacto_run, tmp_path, random_lpips_backbones, monkeypatch):
    # The CPU edits in the training step; here the background path and "a device of its own" are switched on.
    trainer = make_trainer(splatfacto_run, tmp_path)
    monkeypatch.setattr(pipeline_module, "edits_in_background", lambda *args: True)
    monkeypatch.setattr(pipeline_module, "edits_on_own_device", lambda *args: True)
    trainer.config.pipeline._target = ProcessInvertPipeline  # ip2p_process is on by default
    trainer.setup()  # again, with this pipeline
    pipeline, datamanager = trainer.pipeline, trainer.pipeline.datamanager
    assert pipeline.edit_process is not None and pipeline.edit_process.alive
    originals = [image.clone() for image in datamanager.original_images]
    events, save, join = [], trainer.save_checkpoint, pipeline.edit_process.join
    trainer.save_checkpoint = lambda step: (events.append("save"), save(step))
    pipeline.edit_process.join = lambda *args: (events.append("join"), join(*args))
    trainer.train()
    last_save = len(events) - 1 - events[::-1].index("save")
    assert "join" in events and events.index("join") > last_save, "the child exits while the last checkpoint is saved"
    assert datamanager.edited_views == set(range(datamanager.num_train_views))
    for idx, original in enumerate(originals):
        cached = datamanager.cached_train[idx]["image"][..., :3]
        expected = torch.round((1.0 - original[..., :3]) * 255) / 255
        torch.testing.assert_close(cached[1:, 1:], expected[1:, 1:], atol=1e-6, rtol=0)
        assert cached[0, 0, 0] == 1.0  # the child's pid, clamped into the cache's [0, 1]
    assert not pipeline.edit_process.alive, "the edit process stops when training ends"


def test_with_ip2p_process_off_an_editor_of_its_own_runs_on_a_thread(
    splatfacto_run, tmp_path, random_lpips_backbones, monkeypatch
):
    trainer = make_trainer(splatfacto_run, tmp_path)
    monkeypatch.setattr(pipeline_module, "edits_in_background", lambda *args: True)
    monkeypatch.setattr(pipeline_module, "edits_on_own_device", lambda *args: True)
    trainer.config.pipeline._target = InvertEditorPipeline
    trainer.config.pipeline.ip2p_process = False
    trainer.setup()
    assert trainer.pipeline.edit_process is None and trainer.pipeline.async_round is not None


def _compiled_flags(process, views) -> list:
    return [image[0, 1, 0, 0].item() for image in process(_jobs(views))]


def _wait_until(condition, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


COMPILING = SimpleNamespace(edit_max_side=0, ip2p_compile=True)


def test_edits_run_uncompiled_until_the_compiled_child_takes_over(capsys):
    with _process(slowly_compiled_editor, config=COMPILING, compile_ahead=True) as process:
        uncompiled_child = process._child.process
        assert _compiled_flags(process, [0, 1]) == [0.0, 0.0], "the first edits do not wait for the compile"
        assert _compiled_flags(process, [2]) == [0.0]
        _wait_until(lambda: process.compiled)
        assert _compiled_flags(process, [3, 4]) == [1.0, 1.0], "compiled from the next batch on"
        assert process._child.process is not uncompiled_child and process.alive
        uncompiled_child.join(30)
        assert uncompiled_child.exitcode == 0, "the uncompiled child stops when it is told"
        assert _compiled_flags(process, [5]) == [1.0]
    assert not process.alive
    assert "takes over (3 views were edited uncompiled)" in capsys.readouterr().out


def test_the_compiled_child_takes_over_while_a_batch_is_in_flight():
    with _process(slowly_compiled_editor, config=COMPILING, compile_ahead=True) as process:
        uncompiled_child = process._child.process
        process.send(_jobs([0, 1]))
        _wait_until(lambda: process.compiled)
        process.send(_jobs([2]))  # to the compiled child, before the first batch's edits were received
        time.sleep(0.5)
        assert uncompiled_child.is_alive(), "it hands its edits over as shared memory: kept until they are received"
        flags = [[image[0, 1, 0, 0].item() for image in process.receive()] for _ in range(2)]
        assert flags == [[0.0, 0.0], [1.0]], "each batch from the child it was sent to, in the order sent"
        uncompiled_child.join(30)
        assert uncompiled_child.exitcode == 0, "then it stops"
        with pytest.raises(EditProcessError, match="without a batch sent"):
            process.receive()


def test_a_batch_after_the_compile_waits_for_no_one():
    with _process(slowly_compiled_editor, config=COMPILING, compile_ahead=True) as process:
        _wait_until(lambda: process.compiled)  # compiled before the first edit (a warm compile cache)
        assert _compiled_flags(process, [0, 1]) == [1.0, 1.0]


def test_a_run_that_ends_normally_lets_its_compile_finish_for_later_runs():
    with _process(slowly_compiled_editor, config=COMPILING, compile_ahead=True) as process:
        _compiled_flags(process, [0])
        compiler = process._compiler.process
        assert compiler.is_alive() and not process.compiled, "the compile takes longer than this short run"
        process.close(finish_compile=True)
        assert process.compiled and compiler.exitcode == 0, "it compiled, then stopped when told"


def test_a_run_that_stops_otherwise_stops_its_compile():
    with _process(slowly_compiled_editor, config=COMPILING, compile_ahead=True) as process:
        _compiled_flags(process, [0])
        compiler = process._compiler.process
        process.close()
        assert compiler.exitcode != 0 and not process.compiled


def test_ctrl_c_skips_the_wait_for_the_compile(monkeypatch, capsys):
    import igs2gs.edit_process as edit_process_module

    with _process(slowly_compiled_editor, config=COMPILING, compile_ahead=True) as process:
        _compiled_flags(process, [0])
        compiler = process._compiler.process
        join = compiler.join

        def interrupted_join(timeout=None):
            if timeout == edit_process_module._POLL_S:  # the wait for the compile, not the join after terminate()
                raise KeyboardInterrupt
            return join(timeout)

        monkeypatch.setattr(compiler, "join", interrupted_join)
        process.close(finish_compile=True)  # does not raise: the run's end goes on
        assert not compiler.is_alive() and not process.compiled
    assert "background compile skipped" in capsys.readouterr().out


def test_a_failed_compile_leaves_the_edits_uncompiled():
    with _process(uncompilable_editor, config=COMPILING, compile_ahead=True) as process:
        process._compiler.process.join(60)
        assert not process.compiled
        assert _compiled_flags(process, [0, 1]) == [0.0, 0.0]
        assert _compiled_flags(process, [2]) == [0.0]


CHILD_UNDER_A_HEAVY_MAIN = """
import nerfstudio.pipelines.base_pipeline  # as ns-train's script imports all of nerfstudio before it trains

if __name__ == "__main__":
    import torch
    from igs2gs.edit_process import EditProcess
    from igs2gs.edit_worker import EditJob
    from igs2gs.editor import EditSettings
    from igs2gs.igs2gs_pipeline import IGS2GSPipeline, IGS2GSPipelineConfig
    from tests.light_editors import light_child_editor

    IGS2GSPipeline.process_editor_builder = light_child_editor
    process = IGS2GSPipeline._start_edit_process(IGS2GSPipelineConfig(), "cpu")
    original = torch.rand(1, 3, 8, 8)
    job = EditJob(0, torch.rand(1, 3, 8, 8), original, EditSettings(prompt="p"), seed=0, ready=None)
    (image,) = process([job])
    torch.testing.assert_close(image, 1 - original)
    process.close()
    print("child was light")
"""


def test_the_child_starts_without_the_parents_main_script_or_pipeline_config(tmp_path):
    """The pipeline's edit process gets the editor's options and does not re-run the training script: the child
    imports neither that script (as __mp_main__) nor nerfstudio's pipeline (the stand-in builder raises if so)."""
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "heavy_main.py"
    script.write_text(CHILD_UNDER_A_HEAVY_MAIN)
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": f"{repo}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0 and "child was light" in out.stdout, out.stderr[-3000:]


def test_a_main_module_is_hidden_only_while_a_child_spawns_and_kept_for_its_own_functions():
    import sys

    from igs2gs.edit_process import _parent_main_hidden

    main = sys.modules["__main__"]
    before = (main.__dict__.get("__file__"), main.__dict__.get("__spec__"))
    with _parent_main_hidden(pid_editor, None):
        assert "__file__" not in main.__dict__ and getattr(main, "__spec__", None) is None
    assert (main.__dict__.get("__file__"), main.__dict__.get("__spec__")) == before

    def in_main(config, device):
        return None

    in_main.__module__ = "__main__"
    with _parent_main_hidden(pid_editor, in_main):
        assert (main.__dict__.get("__file__"), main.__dict__.get("__spec__")) == before


def test_the_editor_options_hold_what_the_child_reads():
    from dataclasses import fields

    from igs2gs.editor_options import EditorOptions, editor_options

    config = pipeline_module.IGS2GSPipelineConfig(ip2p_compile=True, edit_max_side=256, ip2p_compile_cache=Path("c"))
    options = editor_options(config)
    names = {option.name for option in fields(EditorOptions)}
    assert {"ip2p_model", "ip2p_compile", "ip2p_compile_cache", "edit_max_side", "ip2p_fast_kernels"} <= names
    assert all(getattr(options, name) == getattr(config, name) for name in names)


class SlowEditor(InvertEditor):
    def edit(self, renders, originals, settings, generator=None):
        time.sleep(0.5)
        return super().edit(renders, originals, settings, generator)


def slow_editor(config, device):
    return SlowEditor()


def test_receive_with_a_timeout_returns_none_until_the_edits_come_and_keeps_them():
    with _process(slow_editor) as process:
        process.send(_jobs([0, 1]))
        assert process.receive(timeout=0.01) is None, "the child is still building or editing"
        images = None
        while images is None:
            images = process.receive(timeout=0.05)
        assert len(images) == 2
        process.send(_jobs([2]))
        assert process.receive(timeout=0.01) is None
        assert len(process.receive()) == 1, "a plain receive takes what a timed-out one read meanwhile"


def test_the_compiled_child_has_room_while_the_uncompiled_one_still_edits():
    with _process(slowly_compiled_editor, config=COMPILING, compile_ahead=True) as process:
        assert process.can_send(2)
        process.send(_jobs([0]))
        assert not process.can_send(2), "while compiling, the uncompiled child gets one batch at a time"
        _wait_until(lambda: process.compiled)
        assert process.can_send(2), "the compiled child's own batches count, not the uncompiled child's"
        process.send(_jobs([1]))
        process.send(_jobs([2]))
        assert not process.can_send(2)
        flags = [[image[0, 1, 0, 0].item() for image in process.receive()] for _ in range(3)]
        assert flags == [[0.0], [1.0], [1.0]]


def test_without_a_compile_the_child_takes_in_flight_batches():
    with _process(slow_editor) as process:
        process.send(_jobs([0]))
        assert process.can_send(2)
        process.send(_jobs([1]))
        assert not process.can_send(2)
        assert [len(process.receive()) for _ in range(2)] == [1, 1]


def test_a_failed_compile_gives_the_uncompiled_child_its_batches_back():
    with _process(uncompilable_editor, config=COMPILING, compile_ahead=True) as process:
        _wait_until(lambda: not process._compiler.process.is_alive())
        process.send(_jobs([0]))
        assert process.can_send(2)
        assert len(process.receive()) == 1
