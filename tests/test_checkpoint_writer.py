"""Checkpoints written on a thread of their own (checkpoint_writer.py, `IGS2GSTrainer.save_checkpoint`)."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from nerfstudio.engine.trainer import Trainer

from igs2gs.background_journal import BackgroundJournal
from igs2gs.checkpoint_writer import CheckpointWriter, copy_tensors
from igs2gs.run_keeper import RunKeeper
from igs2gs.trainer_config import IGS2GSTrainer
from tests.test_background_journal import GatedJournal, image


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def test_the_file_holds_the_state_when_write_was_called_not_when_it_is_written(tmp_path):
    weights, gate = torch.zeros(4), threading.Event()
    writer = CheckpointWriter()
    path = tmp_path / "models" / "step-000000001.ckpt"
    writer.write({"step": 1, "weights": [weights]}, path, tmp_path, before=lambda: gate.wait(10))
    weights.add_(1)  # the next training steps change the tensors while the write waits
    gate.set()
    writer.wait()
    saved = load(path)
    assert saved["step"] == 1 and torch.equal(saved["weights"][0], torch.zeros(4))


def test_a_checkpoint_appears_whole_and_only_then_are_older_ones_deleted(tmp_path):
    folder = tmp_path / "nerfstudio_models"
    folder.mkdir()
    older = folder / "step-000000001.ckpt"
    torch.save({"step": 1}, older)
    path, run = folder / "step-000000002.ckpt", tmp_path
    seen = {}

    def before() -> None:  # runs on the writer thread, before the file is written
        seen.update(path=path.exists(), older=older.exists(), thread=threading.current_thread().name)

    writer = CheckpointWriter()
    writer.write({"step": 2}, path, run, keep_only_latest=True, before=before)
    writer.wait()
    assert seen == {"path": False, "older": True, "thread": seen["thread"]}
    assert seen["thread"] != threading.current_thread().name
    assert sorted(p.name for p in folder.iterdir()) == [path.name] and load(path)["step"] == 2
    assert sorted(p.name for p in run.iterdir()) == [folder.name]  # no temporary file left beside the folder


def test_a_failed_write_keeps_the_previous_checkpoint_and_is_raised_by_the_next_write(tmp_path, monkeypatch):
    folder = tmp_path / "nerfstudio_models"
    folder.mkdir()
    older = folder / "step-000000001.ckpt"
    torch.save({"step": 1}, older)
    run = tmp_path

    def full_disk(state, file) -> None:  # writes part of the file, then the disk is full
        file.write(b"half a checkpoint")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    writer = CheckpointWriter()
    writer.write({"step": 2}, folder / "step-000000002.ckpt", run, keep_only_latest=True)
    with pytest.raises(OSError, match="No space left"):
        writer.write({"step": 3}, folder / "step-000000003.ckpt", run, keep_only_latest=True)
    assert sorted(p.name for p in folder.iterdir()) == [older.name]
    assert sorted(p.name for p in run.iterdir()) == [folder.name]  # the half-written file is gone
    monkeypatch.undo()
    assert load(older)["step"] == 1


def test_a_module_state_dict_keeps_its_versions():
    state = torch.nn.BatchNorm1d(3).state_dict()  # an OrderedDict whose _metadata holds the module's version
    copied = copy_tensors({"pipeline": state})["pipeline"]
    assert list(copied) == list(state) and copied._metadata == state._metadata
    assert all(copied[key] is not state[key] and torch.equal(copied[key], state[key]) for key in state)


def test_copies_keep_the_structure_and_leave_other_values_alone():
    tensor = torch.arange(3.0)
    state = {"a": [tensor, (tensor, 2)], "b": "text", "c": {"d": tensor}}
    copied = copy_tensors(state)
    assert copied["b"] == "text" and copied["a"][1][1] == 2 and isinstance(copied["a"][1], tuple)
    copies = (copied["a"][0], copied["a"][1][0], copied["c"]["d"])
    assert all(t is not tensor and torch.equal(t, tensor) for t in copies)


def fake_trainer(tmp_path: Path, keeper: RunKeeper) -> IGS2GSTrainer:
    """An `IGS2GSTrainer` with just what `save_checkpoint` reads: a pipeline whose state holds the keeper's."""
    trainer = IGS2GSTrainer.__new__(IGS2GSTrainer)
    pipeline = SimpleNamespace(keeper=keeper, datamanager=SimpleNamespace())
    pipeline.state_dict = lambda: {"means": torch.ones(2, 3), **keeper.state_dict(pipeline)}
    trainer.pipeline = pipeline
    trainer.optimizers = SimpleNamespace(optimizers={}, schedulers={})
    trainer.grad_scaler = SimpleNamespace(state_dict=dict)
    trainer.checkpoint_dir = tmp_path / "nerfstudio_models"
    trainer.config = SimpleNamespace(save_only_latest_checkpoint=True)
    return trainer


def test_save_returns_at_once_and_the_checkpoint_follows_the_journal_writes_queued_before_it(tmp_path):
    gated = GatedJournal(tmp_path / "edits")
    keeper = RunKeeper()
    keeper.journal = BackgroundJournal(gated)
    keeper.journal.write_edit(3, image(7))  # an edit the checkpoint's cache holds, still being journalled
    trainer = fake_trainer(tmp_path, keeper)
    path = trainer.checkpoint_dir / "step-000000010.ckpt"
    trainer.save_checkpoint(10)  # returns while the journal's write waits at its gate
    assert gated.writes == [] and not path.exists()
    gated.gate.set()
    trainer.wait_for_checkpoint()
    assert gated.writes[0][:2] == ("edit", 3) and load(path)["step"] == 10
    assert torch.equal(load(path)["pipeline"]["means"], torch.ones(2, 3))
    assert keeper._journal_writes is None  # later state_dicts flush the journal again


@pytest.mark.parametrize("stop", [None, KeyboardInterrupt])
def test_train_returns_or_raises_only_once_the_last_checkpoint_is_on_disk(tmp_path, monkeypatch, stop):
    gated = GatedJournal(tmp_path / "edits")
    keeper = RunKeeper()
    keeper.journal = BackgroundJournal(gated)
    trainer = fake_trainer(tmp_path, keeper)

    def train(self) -> None:  # a run whose last checkpoint waits for an edit's journal write
        keeper.journal.write_edit(0, image(5))
        self.save_checkpoint(20)
        threading.Timer(0.3, gated.gate.set).start()
        if stop is not None:
            raise stop()

    monkeypatch.setattr(Trainer, "train", train)
    if stop is None:
        trainer.train()
    else:
        with pytest.raises(stop):
            trainer.train()
    assert load(trainer.checkpoint_dir / "step-000000020.ckpt")["step"] == 20


def test_a_checkpoint_that_cannot_be_written_fails_the_run_at_its_end(tmp_path, monkeypatch):
    keeper = RunKeeper()
    trainer = fake_trainer(tmp_path, keeper)
    trainer.checkpoint_dir.parent.mkdir(parents=True, exist_ok=True)
    trainer.checkpoint_dir.write_text("a file where the checkpoint folder should be")
    monkeypatch.setattr(Trainer, "train", lambda self: self.save_checkpoint(30))
    with pytest.raises(OSError):
        trainer.train()
