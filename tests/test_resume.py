"""Resuming a run in-process on CPU: no edit lost, the round continues at the right view, the run replays exactly.

Every trainer here continues the shared step-199 splatfacto checkpoint with gs_steps 50, so its round
edits the 10 training views at steps 201..210, one per step.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest
import torch

from igs2gs.edit_journal import EditJournal
from igs2gs.editor import EditSettings
from igs2gs.igs2gs_config import igs2gs_method
from igs2gs.igs2gs_datamanager import EDIT_KEY_PREFIX, edit_key, to_uint8
from igs2gs.igs2gs_pipeline import ROUND_KEY, IGS2GSPipeline
from igs2gs.run_state import RUN_STATE_KEY, decode_run_state

VIEWS = 10
ROUND_START = 201


class InvertEditor:
    """The negative of the original photo; raises KeyboardInterrupt (Ctrl-C) at call `interrupt_at`, if given."""

    def __init__(self, interrupt_at: Optional[int] = None) -> None:
        self.calls = 0
        self.interrupt_at = interrupt_at

    def edit(self, renders, originals, settings: EditSettings, generator: Optional[torch.Generator] = None):
        self.calls += 1
        if self.calls == self.interrupt_at:
            raise KeyboardInterrupt
        return 1.0 - originals


class RecordingPipeline(IGS2GSPipeline):
    """Records each finished edit as (view, step) and each plain step's view as (view, step)."""

    interrupt_at: Optional[int] = None

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.edits: List[Tuple[int, int]] = []
        self.sampled: List[Tuple[int, int]] = []
        next_train = self.datamanager.next_train

        def recording_next_train(step: int):
            camera, data = next_train(step)
            self.sampled.append((int(camera.metadata["cam_idx"]), step))
            return camera, data

        self.datamanager.next_train = recording_next_train  # type: ignore[method-assign]

    def build_editor(self):
        return InvertEditor(self.interrupt_at)

    def edit_view(self, idx: int, render: torch.Tensor, step: int) -> torch.Tensor:
        cached = super().edit_view(idx, render, step)
        self.edits.append((idx, step))
        return cached


def build_trainer(
    splatfacto_run: dict,
    output_dir: Path,
    timestamp: str,
    iterations: int,
    load_dir: Optional[Path] = None,
    load_step: Optional[int] = None,
    steps_per_save: int = 1000,
    keep_all_checkpoints: bool = False,
    interrupt_at: Optional[int] = None,
    gs_steps: int = 50,
):
    config = copy.deepcopy(igs2gs_method.config)
    config.machine.device_type = "cpu"
    config.vis = "tensorboard"
    config.output_dir = output_dir
    config.timestamp = timestamp
    config.pipeline.datamanager.data = splatfacto_run["scene"]
    config.load_dir = load_dir or splatfacto_run["run"] / "nerfstudio_models"
    config.load_step = load_step
    config.max_num_iterations = iterations
    config.steps_per_save = steps_per_save
    config.save_only_latest_checkpoint = not keep_all_checkpoints
    config.pipeline.gs_steps = gs_steps
    config.pipeline.prompt = "invert it"
    config.pipeline.edit_batch_size = 1  # one view per editor call, as the paper edits: calls count views
    config.pipeline._target = type("Pipeline", (RecordingPipeline,), {"interrupt_at": interrupt_at})
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    return trainer


def run_folder(trainer) -> Path:
    return Path(trainer.base_dir)


def cached_edits(trainer) -> Dict[int, torch.Tensor]:
    datamanager = trainer.pipeline.datamanager
    return {idx: to_uint8(datamanager.cached_train[idx]["image"][..., :3]) for idx in sorted(datamanager.edited_views)}


def load_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def interrupted(splatfacto_run, tmp_path_factory, _random_lpips_torch_home):
    """A run stopped by Ctrl-C during its 6th edit (view 5, step 206), its last checkpoint at step 204."""
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("TORCH_HOME", str(_random_lpips_torch_home))
    output = tmp_path_factory.mktemp("interrupted")
    trainer = build_trainer(splatfacto_run, output, "first", iterations=10, steps_per_save=2, interrupt_at=6)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    yield {"trainer": trainer, "output": output}
    monkeypatch.undo()


def test_an_interrupted_run_journals_every_edit_it_made(interrupted):
    trainer = interrupted["trainer"]
    assert trainer.pipeline.edits == [(v, ROUND_START + v) for v in range(5)]  # the 6th edit never finished
    journal = EditJournal(run_folder(trainer) / "edits")
    state = journal.read_state()
    assert state is not None
    assert (state.rounds_started, state.active, state.cursor, state.round_start_step) == (1, True, 5, ROUND_START)
    assert state.view_steps == {v: ROUND_START + v for v in range(5)} and state.last_step == 205
    edits = cached_edits(trainer)
    for view in range(5):
        assert torch.equal(journal.read_edit(view), edits[view])
    checkpoints = sorted((run_folder(trainer) / "nerfstudio_models").glob("step-*.ckpt"))
    assert [p.name for p in checkpoints] == ["step-000000204.ckpt"]  # view 4's edit (step 205) is only on disk


def test_resuming_restores_every_edit_and_continues_the_round_at_the_next_view(
    interrupted, splatfacto_run, tmp_path, random_lpips_backbones
):
    first = interrupted["trainer"]
    first_edits = cached_edits(first)
    load_dir = run_folder(first) / "nerfstudio_models"
    trainer = build_trainer(splatfacto_run, tmp_path, "resumed", iterations=100, load_dir=load_dir)
    pipeline = trainer.pipeline

    # the run ends where the interrupted one would have (200 + 10 - 1 = 209), not 100 steps later
    assert trainer.config.max_num_iterations == 209 - 204 and trainer.config.load_scheduler
    # before training: the cache holds the 5 edits exactly as made, the round waits at view 5
    assert set(cached_edits(trainer)) == set(range(5))
    for view, edit in cached_edits(trainer).items():
        assert torch.equal(edit, first_edits[view]), view
    assert (pipeline.edit_round.active, pipeline.edit_round.cursor, pipeline.edit_round.rounds_started) == (True, 5, 1)
    # the new run has its own copy of the journal and a first checkpoint that resumes it
    journal = EditJournal(run_folder(trainer) / "edits")
    assert journal.read_state().view_steps == {v: ROUND_START + v for v in range(5)}
    trainer.wait_for_checkpoint()  # written on a thread of its own (checkpoint_writer.py)
    first_checkpoint = load_checkpoint(run_folder(trainer) / "nerfstudio_models" / "step-000000204.ckpt")
    assert sorted(k for k in first_checkpoint["pipeline"] if k.startswith(EDIT_KEY_PREFIX)) == [
        edit_key(v) for v in range(5)
    ]
    # the learning-rate schedules continue from the checkpoint's (5 steps: 200..204)
    assert trainer.optimizers.schedulers["means"].last_epoch == 5

    trainer.train()
    assert pipeline.edits == [(v, 205 + v - 5) for v in range(5, VIEWS)]  # views 5..9 at steps 205..209
    made = [v for v, _ in first.pipeline.edits] + [v for v, _ in pipeline.edits]
    assert sorted(made) == list(range(VIEWS)), "a view was edited twice or skipped"
    assert not pipeline.edit_round.active and pipeline.edit_round.rounds_started == 1
    final = load_checkpoint(run_folder(trainer) / "nerfstudio_models" / "step-000000209.ckpt")
    assert final["pipeline"][ROUND_KEY].tolist() == [0, 0, 1]
    for view in range(5):
        assert torch.equal(final["pipeline"][edit_key(view)], first_edits[view])


def test_an_igs2gs_checkpoint_loads_weights_only(interrupted):
    path = run_folder(interrupted["trainer"]) / "nerfstudio_models" / "step-000000204.ckpt"
    checkpoint = load_checkpoint(path)  # torch.load(weights_only=True): no pickled Python objects
    pipeline = checkpoint["pipeline"]
    assert all(isinstance(value, torch.Tensor) for value in pipeline.values())
    state, rng = decode_run_state(pipeline)
    assert state is not None and RUN_STATE_KEY in pipeline
    assert state.end_step == 209 and state.round_start_step == ROUND_START and "torch" in rng
    assert state.settings["prompt"] == "invert it"


def test_resuming_from_a_checkpoint_replays_the_run_exactly(splatfacto_run, tmp_path, random_lpips_backbones):
    # gs_steps 103: plain steps 200..206 (views drawn at random), then a round from step 207 (206 % 103 == 0)
    options = {"gs_steps": 103, "steps_per_save": 4, "keep_all_checkpoints": True}
    whole = build_trainer(splatfacto_run, tmp_path, "whole", iterations=8, **options)
    whole.train()  # steps 200..207, checkpoints at 204 and 207 (the end)
    load_dir = run_folder(whole) / "nerfstudio_models"
    resumed = build_trainer(
        splatfacto_run, tmp_path, "resumed", iterations=100, load_dir=load_dir, load_step=204, **options
    )
    resumed.train()  # steps 205..207: two drawn views, then the edit of view 0
    assert [step for _, step in resumed.pipeline.sampled] == [205, 206]
    assert resumed.pipeline.edits == [(0, 207)]

    assert resumed.pipeline.edits == [(idx, step) for idx, step in whole.pipeline.edits if step > 204]
    assert resumed.pipeline.sampled == [(idx, step) for idx, step in whole.pipeline.sampled if step > 204]
    for name, param in whole.pipeline.model.gauss_params.items():
        torch.testing.assert_close(resumed.pipeline.model.gauss_params[name], param, rtol=0, atol=0, msg=name)
