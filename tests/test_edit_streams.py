"""The editor's CUDA stream, as far as the CPU can check it (tests/test_gpu.py runs it on a GPU)."""

from __future__ import annotations

import sys
import types

import torch

from igs2gs import edit_streams


def test_no_stream_off_cuda():
    assert edit_streams.editing_stream("cpu") is None
    assert edit_streams.editing_stream("cpu", sm_fraction=0.5) is None


class _Properties:
    multi_processor_count = 132


def _fake_green_contexts(monkeypatch, create):
    module = types.ModuleType("torch.cuda.green_contexts")
    module.GreenContext = types.SimpleNamespace(create=create)
    monkeypatch.setitem(sys.modules, "torch.cuda.green_contexts", module)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: _Properties())


def test_a_partition_asks_for_the_share_of_the_multiprocessors(monkeypatch):
    asked = {}

    class Context:
        def Stream(self):  # noqa: N802 (torch's name)
            return "green stream"

    def create(num_sms, device_id):
        asked.update(num_sms=num_sms, device_id=device_id)
        return Context()

    _fake_green_contexts(monkeypatch, create)
    assert edit_streams.partitioned_stream(torch.device("cuda", 1), 0.75) == "green stream"
    assert asked == {"num_sms": 99, "device_id": 1}
    assert isinstance(edit_streams._green_contexts[-1], Context), "the context is kept alive for its stream"


def test_without_green_contexts_the_editor_keeps_every_multiprocessor(monkeypatch, capsys):
    def create(num_sms, device_id):
        raise RuntimeError("Green Context requires user mode driver 12.8+")

    _fake_green_contexts(monkeypatch, create)
    assert edit_streams.partitioned_stream(torch.device("cuda", 0), 0.5) is None
    out = capsys.readouterr().out
    assert "cannot confine the editor to 66 of 132 multiprocessors" in out and "driver 12.8" in out
