"""The edit journal written on a thread of its own (background_journal.py) and flushed when training stops."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from nerfstudio.engine.trainer import Trainer

from igs2gs.background_journal import BackgroundJournal
from igs2gs.edit_journal import EditJournal, JournalState
from igs2gs.run_keeper import RunKeeper
from igs2gs.trainer_config import IGS2GSTrainer


class GatedJournal(EditJournal):
    """Records each write (kind, view, thread) once `gate` opens; `fail` makes image writes raise."""

    def __init__(self, folder: Path, fail: bool = False) -> None:
        super().__init__(folder)
        self.gate, self.fail, self.writes = threading.Event(), fail, []

    def write_edit(self, idx: int, image: torch.Tensor) -> None:
        self.gate.wait(10)
        if self.fail:
            raise OSError("No space left on device")
        super().write_edit(idx, image)
        self.writes.append(("edit", idx, threading.current_thread().name))

    def write_state(self, state: JournalState) -> None:
        self.gate.wait(10)
        super().write_state(state)
        self.writes.append(("state", state.cursor, threading.current_thread().name))


def image(value: int) -> torch.Tensor:
    return torch.full((4, 5, 3), value, dtype=torch.uint8)


def test_writes_leave_the_caller_at_once_and_reach_disk_in_order(tmp_path):
    gated = GatedJournal(tmp_path)
    journal = BackgroundJournal(gated)
    for view in range(3):
        journal.write_edit(view, image(10 * view))
        journal.write_state(JournalState(cursor=view + 1, view_steps={v: v for v in range(view + 1)}))
    assert gated.writes == [] and not list(tmp_path.glob("*.png"))  # nothing written while the writer waits
    gated.gate.set()
    journal.flush()
    assert [write[:2] for write in gated.writes] == [
        ("edit", 0), ("state", 1), ("edit", 1), ("state", 2), ("edit", 2), ("state", 3)
    ]  # fmt: skip
    assert all(write[2] != threading.current_thread().name for write in gated.writes)
    assert gated.read_state().view_steps == {0: 0, 1: 1, 2: 2}
    for view in range(3):
        assert torch.equal(gated.read_edit(view), image(10 * view))


def test_a_failed_write_is_raised_by_flush(tmp_path):
    gated = GatedJournal(tmp_path, fail=True)
    journal = BackgroundJournal(gated)
    journal.write_edit(0, image(1))  # queued: the failure comes later
    gated.gate.set()
    with pytest.raises(OSError, match="No space left"):
        journal.flush()


def test_a_failed_write_is_raised_by_the_next_write(tmp_path):
    gated = GatedJournal(tmp_path, fail=True)
    gated.gate.set()
    journal = BackgroundJournal(gated)
    journal.write_edit(0, image(1))
    journal._pending[0].exception(timeout=10)  # the write has failed by now
    with pytest.raises(OSError, match="No space left"):
        journal.write_state(JournalState())


def test_the_keeper_flushes_the_journal_before_a_checkpoint(tmp_path):
    gated = GatedJournal(tmp_path)
    keeper = RunKeeper()
    keeper.journal = BackgroundJournal(gated)
    keeper.journal.write_edit(3, image(7))
    threading.Timer(0.2, gated.gate.set).start()
    keeper.flush_journal()
    assert gated.writes[0][:2] == ("edit", 3) and torch.equal(gated.read_edit(3), image(7))


@pytest.mark.parametrize("stop", [None, KeyboardInterrupt, RuntimeError])
def test_the_trainer_finishes_the_journal_when_training_stops(tmp_path, monkeypatch, stop):
    gated = GatedJournal(tmp_path)
    keeper = RunKeeper()
    keeper.journal = BackgroundJournal(gated)

    def train(self) -> None:  # a training run that journals an edit and then ends or is stopped
        keeper.journal.write_edit(0, image(5))
        threading.Timer(0.2, gated.gate.set).start()
        if stop is not None:
            raise stop("stopped")

    monkeypatch.setattr(Trainer, "train", train)
    trainer = IGS2GSTrainer.__new__(IGS2GSTrainer)
    trainer.pipeline = SimpleNamespace(keeper=keeper)
    if stop is None:
        trainer.train()
    else:
        with pytest.raises(stop):
            trainer.train()
    assert [write[:2] for write in gated.writes] == [("edit", 0)]  # written before train() returned or raised


def test_a_journal_that_fails_as_training_stops_does_not_hide_why_it_stopped(tmp_path, monkeypatch):
    gated = GatedJournal(tmp_path, fail=True)
    gated.gate.set()
    keeper = RunKeeper()
    keeper.journal = BackgroundJournal(gated)

    def train(self) -> None:
        keeper.journal.write_edit(0, image(5))
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "train", train)
    trainer = IGS2GSTrainer.__new__(IGS2GSTrainer)
    trainer.pipeline = SimpleNamespace(keeper=keeper)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
