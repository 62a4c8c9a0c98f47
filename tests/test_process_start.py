"""Forked or spawned edit processes (igs2gs/process_start.py), with stand-in editors on the CPU."""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import threading

import pytest
import torch

import igs2gs.process_start as process_start
from igs2gs.edit_process import EditProcess
from igs2gs.process_start import START_METHOD_VARIABLE, cuda_driver_initialised, fork_refusal, start_context
from tests.test_edit_process import CONFIG, SETTINGS, InvertEditor, _jobs, failing_builder

SET_AFTER_IMPORT: list[int] = []
"""Filled by the tests at run time: a forked child sees it filled, a spawned one (which imports this module afresh)
sees it empty."""


class StateEditor(InvertEditor):
    """Inverts the originals; writes into the first pixels what its process sees: the module state above, its
    number of CPU threads, its parent's process id."""

    def edit(self, renders, originals, settings, generator=None):
        out = super().edit(renders, originals, settings, generator)
        out[:, 0, 0, 0] = len(SET_AFTER_IMPORT)
        out[:, 1, 0, 0] = torch.get_num_threads()
        out[:, 2, 0, 0] = os.getppid()
        return out


def state_editor(config, device):
    return StateEditor()


@contextlib.contextmanager
def _process(builder):
    process = EditProcess(CONFIG, "cpu", builder=builder)
    process.plan([(16, 24)], 2, SETTINGS)
    try:
        yield process
    finally:
        process.close()


@pytest.fixture
def alone(monkeypatch):
    """The earlier tests' edit processes leave idle threads in this process (their queues' feeders, the sharer of
    shared-memory handles), which would keep it from forking; `ns-train` has none when its pipeline is built."""
    monkeypatch.setattr(process_start, "other_threads", lambda: [])


@pytest.fixture
def marked():
    SET_AFTER_IMPORT.append(1)
    yield
    SET_AFTER_IMPORT.clear()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forks only on Linux")
def test_a_forked_child_edits_with_the_parents_state_on_one_thread(monkeypatch, alone, marked, capfd):
    monkeypatch.setenv(START_METHOD_VARIABLE, "fork")
    assert fork_refusal("cpu") is None, "nothing in this test process should keep it from forking"
    with _process(state_editor) as process:
        jobs = _jobs([0, 1])
        images = process(jobs)
        for job, image in zip(jobs, images):
            torch.testing.assert_close(image[..., 1:, 1:], 1 - job.original[..., 1:, 1:])
            assert image[0, 0, 0, 0].item() == 1, "the child sees what the parent set after its imports"
            assert image[0, 1, 0, 0].item() == 1, "a forked child runs torch on one CPU thread"
            assert image[0, 2, 0, 0].item() == os.getpid()
        assert process.alive
    assert not process.alive
    assert "InstructPix2Pix loaded in the edit process (forked)" in " ".join(capfd.readouterr().out.split())


def test_a_spawned_child_starts_afresh(monkeypatch, marked, capfd):
    monkeypatch.setenv(START_METHOD_VARIABLE, "spawn")
    with _process(state_editor) as process:
        image = process(_jobs([0]))[0]
        assert image[0, 0, 0, 0].item() == 0, "a spawned child imports the module again"
        assert image[0, 1, 0, 0].item() == 1, "a spawned child edits on one CPU thread too, as a forked one does"
        assert image[0, 2, 0, 0].item() == os.getpid()
    out = " ".join(capfd.readouterr().out.split())
    assert f"InstructPix2Pix loaded in the edit process (spawned: {START_METHOD_VARIABLE}=spawn)" in out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forks only on Linux")
def test_a_forked_childs_errors_reach_the_training_process(monkeypatch, alone, capfd):
    monkeypatch.setenv(START_METHOD_VARIABLE, "fork")
    with _process(failing_builder) as process, pytest.raises(ValueError, match="no InstructPix2Pix") as raised:
        process(_jobs([0]))
    assert "raised in the InstructPix2Pix process" in "".join(getattr(raised.value, "__notes__", []))
    assert not process.alive
    assert "(forked)" not in capfd.readouterr().out, "a child whose editor failed says nothing about loading it"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forks only on Linux")
def test_fork_only_while_it_is_safe(monkeypatch):
    monkeypatch.delenv(START_METHOD_VARIABLE, raising=False)
    threads = process_start.other_threads
    monkeypatch.setattr(process_start, "other_threads", lambda: [])
    monkeypatch.setattr(process_start, "cuda_driver_initialised", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    assert fork_refusal("cuda:1") is None
    context, how = start_context("cuda:1")
    assert context.get_start_method() == "fork" and how == "forked"
    assert "only for CUDA editors" in fork_refusal("cpu"), "by default a CPU editor is spawned"
    monkeypatch.setenv(START_METHOD_VARIABLE, "spawn")
    context, how = start_context("cuda:1")
    assert context.get_start_method() == "spawn" and how == f"spawned: {START_METHOD_VARIABLE}=spawn"
    monkeypatch.setenv(START_METHOD_VARIABLE, "fork")
    assert fork_refusal("cpu") is None
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    assert fork_refusal("cuda:1") == "CUDA is already initialised in the training process"
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(process_start, "cuda_driver_initialised", lambda: True)
    assert fork_refusal("cuda:1") == "CUDA is already initialised in the training process"
    monkeypatch.setattr(process_start, "cuda_driver_initialised", lambda: False)
    monkeypatch.setattr(process_start, "other_threads", threads)
    release = threading.Event()
    thread = threading.Thread(target=release.wait, name="viewer-like")
    thread.start()
    try:
        refusal = fork_refusal("cuda:1")
        assert refusal.startswith("other threads run in the training process (") and "viewer-like" in refusal
        assert start_context("cuda:1")[0].get_start_method() == "spawn"
    finally:
        release.set()
        thread.join()
    assert "viewer-like" not in (fork_refusal("cuda:1") or "")
    monkeypatch.setattr(process_start, "other_threads", lambda: [])
    monkeypatch.setattr(sys, "platform", "darwin")
    assert fork_refusal("cuda:1") == "forks only on Linux, not darwin"


def test_an_unknown_start_method_is_an_error(monkeypatch):
    monkeypatch.setenv(START_METHOD_VARIABLE, "forkserver")
    with pytest.raises(ValueError, match="IGS2GS_START_METHOD='forkserver': use one of auto, fork, spawn"):
        fork_refusal("cuda:1")


class _FakeDriver:
    def __init__(self, status: int) -> None:
        self.status = status

    def cuCtxGetCurrent(self, pointer) -> int:  # noqa: N802 - the driver's name
        return self.status


def test_the_driver_reads_as_initialised_unless_it_answers_not_initialised(monkeypatch):
    monkeypatch.setattr(ctypes, "CDLL", lambda name: _FakeDriver(3))
    assert not cuda_driver_initialised()
    monkeypatch.setattr(ctypes, "CDLL", lambda name: _FakeDriver(0))
    assert cuda_driver_initialised()

    def missing(name):
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(ctypes, "CDLL", missing)
    assert not cuda_driver_initialised(), "no driver library: nothing is initialised"


def test_the_plugins_import_leaves_cuda_uninitialised():
    """Nothing on `ns-train`'s way to the edit processes asks `torch.cuda.is_available()`, which initialises the
    CUDA driver on a GPU machine (cudaGetDeviceCount): the checks count GPUs through NVML instead."""
    import subprocess

    code = (
        "import sys, torch\n"
        "calls = []\n"
        "def is_available():\n"
        "    calls.append(sys._getframe(1).f_globals.get('__name__'))\n"
        "    return False\n"
        "torch.cuda.is_available = is_available\n"
        "import nerfstudio.configs.method_configs, igs2gs.igs2gs_config, igs2gs.validation as v\n"
        "import igs2gs.async_edits as a\n"
        "from igs2gs.process_start import cuda_driver_initialised\n"
        "v.check_device_exists(torch.device('cpu'), '--x', 'y')\n"
        "a.edits_in_background('cuda', 'cuda:1', True)\n"
        "assert not calls and not torch.cuda.is_initialized() and not cuda_driver_initialised(), calls\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
