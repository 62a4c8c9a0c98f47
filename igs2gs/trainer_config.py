"""The method's `TrainerConfig`: checks `--data`, `--load-dir` and the device before the trainer is built,
and decides whether the checkpoint is an unfinished igs2gs run to resume or a scene to start editing. Its trainer
(`IGS2GSTrainer`) writes checkpoints on a thread of their own and finishes them and the edit journal's writes
whenever training stops, draws the viewer's camera thumbnails from the cached photos, and steps the Gaussians' fused
Adams in one pass (grouped_adam.py).

- Resume (an igs2gs checkpoint saved before its run's last step): its learning-rate schedules are
  restored (`load_scheduler` True) and the run ends at the step the interrupted run would have ended
  at (`max_num_iterations` set to the steps left).
- New edit (a splatfacto checkpoint, or a finished igs2gs run): the schedules are not restored
  (`load_scheduler` False: splatfacto's are decayed, e.g. means at 1.6e-6 at 30k), and the run
  trains `--max-num-iterations` steps after the checkpoint.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping, Type

import torch
from nerfstudio.engine.optimizers import Optimizers
from nerfstudio.engine.trainer import Trainer, TrainerConfig
from nerfstudio.utils.decorators import check_main_thread, check_viewer_enabled
from nerfstudio.utils.rich_utils import CONSOLE
from nerfstudio.viewer.viewer import Viewer

from igs2gs.checkpoint_checks import check_splatfacto_checkpoint, checkpoint_step, find_checkpoint, read_checkpoint
from igs2gs.checkpoint_writer import CheckpointWriter
from igs2gs.grouped_adam import GroupedOptimizers
from igs2gs.run_state import decode_run_state
from igs2gs.validation import check_data, check_device_exists
from igs2gs.viewer_thumbnails import ThumbnailDataset


class IGS2GSTrainer(Trainer):
    """nerfstudio's trainer, with checkpoints written on a thread of their own (checkpoint_writer.py) and the viewer's
    camera thumbnails made from the cached photos (viewer_thumbnails.py). When training
    stops, at its end, by Ctrl-C or by an error, the checkpoint in flight and the edit journal's queued writes
    (background_journal.py) are done before `train` returns or raises; at its end, the edit processes have exited
    too (they exit while the last checkpoint is saved). The Gaussians' fused Adams step in one pass
    (grouped_adam.py)."""

    @cached_property
    def checkpoint_writer(self) -> CheckpointWriter:
        """The thread that writes this trainer's checkpoints."""
        return CheckpointWriter()

    @check_main_thread
    def save_checkpoint(self, step: int) -> None:
        """nerfstudio's checkpoint, written on a thread of its own (checkpoint_writer.py): the training thread
        gathers the state and copies its tensors, the writer waits for the edit journal's writes queued so far,
        then writes the file and renames it into place."""
        keeper = getattr(self.pipeline, "keeper", None)
        with keeper.journal_waited_later() if keeper is not None else nullcontext(None) as journal_written:
            state = {
                "step": step,
                "pipeline": self.pipeline.state_dict(),
                "optimizers": {k: v.state_dict() for (k, v) in self.optimizers.optimizers.items()},
                "schedulers": {k: v.state_dict() for (k, v) in self.optimizers.schedulers.items()},
                "scalers": self.grad_scaler.state_dict(),
            }
        path = Path(self.checkpoint_dir) / f"step-{step:09d}.ckpt"
        self.checkpoint_writer.write(
            state,
            path,
            temporary_folder=Path(self.checkpoint_dir).parent,  # nerfstudio reads the checkpoint folder file by file
            keep_only_latest=self.config.save_only_latest_checkpoint,
            before=journal_written,
        )

    def wait_for_checkpoint(self) -> None:
        """Wait until the last checkpoint asked for is on disk; raise its write's error."""
        self.checkpoint_writer.wait()

    @check_viewer_enabled
    def _init_viewer_state(self) -> None:
        """nerfstudio's, with the training cameras' thumbnails made from the cached photos (viewer_thumbnails.py)."""
        datamanager = self.pipeline.datamanager
        assert self.viewer_state and datamanager.train_dataset
        train_dataset = datamanager.train_dataset
        if isinstance(self.viewer_state, Viewer) and hasattr(datamanager, "original_image"):
            train_dataset = ThumbnailDataset(train_dataset, datamanager.original_image)
        self.viewer_state.init_scene(
            train_dataset=train_dataset, train_state=self.training_state, eval_dataset=datamanager.eval_dataset
        )

    def setup_optimizers(self) -> Optimizers:
        """nerfstudio's optimizers, with the fused Adams stepped in one pass (grouped_adam.py)."""
        return GroupedOptimizers(self.config.optimizers.copy(), self.pipeline.get_param_groups())

    def train(self) -> None:
        try:
            super().train()
        except BaseException:
            _finish_writes(self, quietly=True)  # the error that stopped training is the one to raise
            raise
        _finish_writes(self, quietly=False)
        join = getattr(self.pipeline, "join_edit_processes", None)  # told to stop at the last step
        if join is not None:
            join()


def _finish_writes(trainer: IGS2GSTrainer, quietly: bool) -> None:
    """Wait for the checkpoint in flight and the edit journal's queued writes; `quietly` logs their errors instead
    of raising them."""
    keeper = getattr(trainer.pipeline, "keeper", None)
    for what, finish in (
        ("the last checkpoint", trainer.wait_for_checkpoint),
        ("the edit journal", keeper.flush_journal if keeper is not None else None),
    ):
        if finish is None:
            continue
        try:
            finish()
        except Exception as error:
            if not quietly:
                raise
            CONSOLE.log(f"igs2gs: {what} could not be written: {error}")


@dataclass
class IGS2GSTrainerConfig(TrainerConfig):
    """nerfstudio's trainer config, checked before the trainer is built (see the module docstring)."""

    _target: Type = field(default_factory=lambda: IGS2GSTrainer)

    def setup(self, **kwargs) -> Any:
        prepare_run(self)
        return super().setup(**kwargs)


def prepare_run(config: TrainerConfig) -> None:
    """Check the run's inputs (raising `IGS2GSConfigError`) and set `load_step`, `load_scheduler` and the run length."""
    device = config.machine.device_type
    check_device_exists(
        torch.device(device), "--machine.device-type", "pass --machine.device-type cpu (tiny scenes only)"
    )
    datamanager = config.pipeline.datamanager
    given = config.data if config.data is not None else datamanager.data
    check_data(given if given is not None else datamanager.dataparser.data, given=given is not None)
    path = find_checkpoint(config.load_dir, config.load_step, config.load_checkpoint)
    checkpoint = read_checkpoint(path)
    check_splatfacto_checkpoint(checkpoint, path)
    if config.load_dir is not None and config.load_step is None:
        # The step found above; nerfstudio would parse every file name in the folder to find it (and fail on others).
        config.load_step = checkpoint_step(path)
    choose_resume_or_new_edit(config, checkpoint, path)


def choose_resume_or_new_edit(config: TrainerConfig, checkpoint: Mapping[str, Any], path: Path) -> None:
    """Resume an unfinished igs2gs run, or start a new edit (see the module docstring)."""
    step = int(checkpoint["step"])
    state, _ = decode_run_state(checkpoint["pipeline"])
    if state is not None and state.end_step is not None and step < state.end_step:
        left = state.end_step - step
        if config.max_num_iterations != left:
            CONSOLE.log(f"igs2gs: overriding --max-num-iterations {config.max_num_iterations} with {left}")
        config.max_num_iterations = left
        config.load_scheduler = True
        CONSOLE.log(
            f"igs2gs: resuming the unfinished edit in {path}: steps {step + 1} to {state.end_step}, with its learning-"
            "rate schedules"
        )
        return
    origin = "a finished igs2gs run" if state is not None else "splatfacto"
    config.load_scheduler = False
    CONSOLE.log(
        f"igs2gs: a new edit from {path} ({origin}, step {step}): {config.max_num_iterations} steps; the checkpoint's "
        "decayed learning-rate schedules are not restored"
    )
