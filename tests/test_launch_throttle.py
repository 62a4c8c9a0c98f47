"""CPU tests of the launch throttle (`igs2gs/launch_throttle.py`) and of its use by the editor and the config.

The CUDA events are replaced by recording fakes; tests/test_gpu.py checks on a GPU that the wait releases the GIL.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, List

import pytest
import torch

from igs2gs.editor import EditSettings
from igs2gs.errors import IGS2GSConfigError
from igs2gs.fast_edits import configure_editor
from igs2gs.igs2gs_pipeline import IGS2GSPipelineConfig
from igs2gs.launch_throttle import LaunchThrottle
from igs2gs.validation import check_pipeline_options


class FakeEvent:
    """Records where it was recorded and when it was waited for, in a shared log."""

    def __init__(self, log: List[Any], number: int) -> None:
        self.log, self.number = log, number

    def record(self, stream: Any = None) -> None:
        self.log.append(("record", self.number, stream))

    def synchronize(self) -> None:
        self.log.append(("wait", self.number))


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> List[Any]:
    """torch.cuda.current_stream answers without a GPU; returns the events' shared log."""
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: f"stream of {device}")
    return []


def throttle(log: List[Any], ahead: int) -> LaunchThrottle:
    numbers = iter(range(1000))
    return LaunchThrottle(ahead, new_event=lambda: FakeEvent(log, next(numbers)))


@pytest.mark.parametrize("ahead", [1, 2, 3])
def test_waits_for_the_oldest_mark_once_more_than_ahead_are_queued(fake_cuda: List[Any], ahead: int) -> None:
    t = throttle(fake_cuda, ahead)
    for _ in range(6):
        t.mark("cuda:1")
        assert t.pending == min(ahead, len([e for e in fake_cuda if e[0] == "record"]))
    waits = [e[1] for e in fake_cuda if e[0] == "wait"]
    assert waits == list(range(6 - ahead)), waits  # oldest first, each once
    # Each mark is recorded on the device's current stream before any wait it causes.
    assert fake_cuda[0] == ("record", 0, "stream of cuda:1")
    for number in waits:
        assert fake_cuda.index(("record", number + ahead, "stream of cuda:1")) < fake_cuda.index(("wait", number))


def test_no_bound_and_the_cpu_record_nothing(fake_cuda: List[Any]) -> None:
    for t, device in ((throttle(fake_cuda, 0), "cuda"), (throttle(fake_cuda, 1), "cpu")):
        for _ in range(4):
            t.mark(device)
        assert t.pending == 0
    assert fake_cuda == []


def test_negative_ahead_is_refused() -> None:
    with pytest.raises(ValueError, match="ahead must be 0"):
        LaunchThrottle(-1)


def test_the_editor_marks_each_vae_chunk_and_denoising_step() -> None:
    from diffusers import DDIMScheduler

    from igs2gs.ip2p import InstructPix2PixEditor
    from tests.tiny_ip2p import tiny_components

    parts = tiny_components(seed=0)
    parts["scheduler"] = DDIMScheduler.from_config(parts["scheduler"].config)
    editor = InstructPix2PixEditor(**parts, device="cpu", dtype=torch.float32)
    marks: List[str] = []
    editor.throttle_launches(2)
    assert editor._throttle.ahead == 2
    editor._throttle = SimpleNamespace(mark=lambda device: marks.append(str(device)))
    editor.enable_vae_slicing()  # one VAE chunk per image
    g = torch.Generator().manual_seed(0)
    renders, originals = torch.rand(3, 3, 64, 64, generator=g), torch.rand(3, 3, 64, 64, generator=g)
    settings = EditSettings(prompt="x", diffusion_steps=4)
    editor.edit(renders, originals, settings, generator=torch.Generator().manual_seed(1))
    # 3 renders and 3 originals encoded, 4 steps, 3 decodes.
    assert marks == ["cpu"] * (3 + 3 + 4 + 3), marks


def test_the_pipeline_config_sets_the_editors_bound() -> None:
    asked: List[int] = []
    editor = SimpleNamespace(
        throttle_launches=asked.append, enable_vae_slicing=lambda: None, device=torch.device("cpu")
    )
    config = IGS2GSPipelineConfig(ip2p_launch_ahead=3)
    configure_editor(editor, config)
    assert asked == [3]
    assert IGS2GSPipelineConfig().ip2p_launch_ahead == 2


@pytest.mark.parametrize("value", [-1, 1.5, True, "2"])
def test_a_bad_bound_is_a_config_error(value: Any) -> None:
    with pytest.raises(IGS2GSConfigError, match="ip2p-launch-ahead must be an integer >= 0"):
        check_pipeline_options(IGS2GSPipelineConfig(ip2p_launch_ahead=value))
