"""Keeps an igs2gs run resumable and honest; the pipeline calls it at a few points.

- Checkpoints: `state_dict` / `load_state_dict` carry the `RunState` (round start step, end step, edit
  settings, each view's latest edit step) and the generator states (`rng_state`).
- Every edit goes to the run's `edits/` journal as it is made (`edit_journal`), written on a thread of its own
  (`background_journal`) and is on disk before any checkpoint that holds the edit (`journal_waited_later`).
- `start` (from `get_training_callbacks`, which nerfstudio 1.1.5 calls after loading the checkpoint):
  restores journal edits newer than the checkpoint, so a run killed between checkpoints loses none,
  copies the edits into the new run's journal, writes a first checkpoint of the new run (so
  `--load-dir <new run>/nerfstudio_models` always resumes it), and returns the callbacks that
  restore the generators before the first step and check the splats after each round.
"""

from __future__ import annotations

from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

import torch
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.utils.rich_utils import CONSOLE

from igs2gs.background_journal import BackgroundJournal
from igs2gs.checkpoint_checks import check_same_placement, list_checkpoints
from igs2gs.edit_journal import EditJournal, JournalState
from igs2gs.edit_schedule import EditRound
from igs2gs.igs2gs_datamanager import to_uint8
from igs2gs.optimizer_binding import optimizers_hold
from igs2gs.rng_state import capture_rng, restore_rng
from igs2gs.run_state import (
    RunState,
    changed_settings,
    decode_run_state,
    edit_settings,
    encode_run_state,
    settings_hash,
)
from igs2gs.splat_health import SplatChangeMonitor, stop_if_unchanged

if TYPE_CHECKING:
    from nerfstudio.engine.trainer import TrainerConfig

    from igs2gs.igs2gs_pipeline import IGS2GSPipeline

JOURNAL_FOLDER = "edits"
"""The journal's folder inside a run folder."""


def loaded_checkpoint(config: TrainerConfig) -> Optional[Path]:
    """The checkpoint file the trainer loaded (`--load-checkpoint`, or `--load-dir` at `--load-step` / the newest)."""
    if config.load_dir is not None:
        checkpoints = list_checkpoints(Path(config.load_dir))
        step = config.load_step if config.load_step is not None else max(checkpoints, default=None)
        return checkpoints.get(step) if step is not None else None
    return Path(config.load_checkpoint) if config.load_checkpoint is not None else None


def is_newest(checkpoint: Path, step: int) -> bool:
    """Whether no checkpoint after `step` sits beside `checkpoint`."""
    return max(list_checkpoints(checkpoint.parent), default=step) <= step


class RunKeeper:
    """Resume state, edit journal and splat health of one pipeline."""

    def __init__(self) -> None:
        self.state = RunState()
        self.loaded_step: Optional[int] = None
        """Step of the loaded checkpoint (set by the pipeline's `load_pipeline`)."""
        self.journal: Optional[BackgroundJournal] = None
        self.monitor = SplatChangeMonitor()
        self._pending_rng: Optional[Tuple[Dict[str, Any], Dict[str, torch.Tensor]]] = None
        self._round_finished_at: Optional[int] = None
        self._finished_round = 0
        """The number of the round that finished at `_round_finished_at`."""
        self._optimizers: Optional[Mapping[str, torch.optim.Optimizer]] = None
        self._journal_writes: Optional[List[Future]] = None
        """Inside `journal_waited_later`: the journal's writes that the checkpoint being taken waits for."""

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self, pipeline: IGS2GSPipeline) -> Dict[str, torch.Tensor]:
        """Checkpoint entries of the run state; generator states not yet restored are saved as loaded. The journal
        is flushed first, so that it holds every edit the checkpoint's cache holds; inside `journal_waited_later`,
        its queued writes are handed to the checkpoint's writer to wait for instead."""
        if self._journal_writes is not None:
            self._journal_writes.extend(self.journal.queued() if self.journal is not None else ())
        else:
            self.flush_journal()
        plain, tensors = self._pending_rng or capture_rng(pipeline.datamanager)
        self.state.rng = plain
        return encode_run_state(self.state, tensors)

    @contextmanager
    def journal_waited_later(self) -> Iterator[Callable[[], None]]:
        """While open, `state_dict` does not wait for the journal's queued writes. The function it yields waits
        for those queued before each `state_dict` (on any thread, e.g. the checkpoint's writer), raising the first
        that failed: the checkpoint is written once its edits are in the journal."""
        writes: List[Future] = []

        def wait_for_writes() -> None:
            for write in writes:
                write.result()

        self._journal_writes = writes
        try:
            yield wait_for_writes
        finally:
            self._journal_writes = None

    def load_state_dict(self, entries: Mapping[str, Any]) -> None:
        """Take the run state of a checkpoint (`split_run_state`'s second part); generators wait for `start`."""
        state, tensors = decode_run_state(entries)
        if state is not None:
            self.state = state
            self._pending_rng = (state.rng, tensors)

    # ------------------------------------------------------------------ rounds

    def round_began(self, pipeline: IGS2GSPipeline, step: int) -> None:
        """A round begins at `step`: remember the step and the splats. A round that finished in this step (a
        background round completes at the step that begins the next one) is reported first."""
        if self._round_finished_at is not None:
            self._report_round(pipeline)
        self.state.round_start_step = step
        self.monitor.begin(pipeline.model.gauss_params)

    def view_done(self, pipeline: IGS2GSPipeline, idx: int, step: int, kept: Optional[bool] = None) -> None:
        """The round went past view `idx` at `step` (after `edit_round.advance`): journal it.

        `kept` says whether the view's edit reached the cache; by default the edit guard's last verdict.
        """
        self.state.settings = edit_settings(pipeline.config)
        if pipeline.edit_guard.last_kept if kept is None else kept:
            self.state.view_steps[idx] = step
            if self.journal is not None:
                self.journal.write_edit(idx, to_uint8(pipeline.datamanager.cached_train[idx]["image"][..., :3]))
        if self.journal is not None:
            self.journal.write_state(self._journal_state(pipeline, last_step=step))
        if not pipeline.edit_round.active:
            self._round_finished_at = step
            self._finished_round = pipeline.edit_round.rounds_started

    # ------------------------------------------------------------------ start of training

    def start(self, pipeline: IGS2GSPipeline, attributes: TrainingCallbackAttributes) -> List[TrainingCallback]:
        """Restore and copy the journal, write the run's first checkpoint; return the keeper's callbacks."""
        self._optimizers = attributes.optimizers.optimizers if attributes.optimizers is not None else None
        trainer = attributes.trainer
        step = self.loaded_step
        restored = False
        if trainer is not None and step is not None:
            self.state.end_step = step + trainer.config.max_num_iterations
            self._announce_settings(pipeline)
            source = loaded_checkpoint(trainer.config)
            if source is not None:
                outputs = pipeline.datamanager.train_dataparser_outputs
                check_same_placement(source.parent.parent, outputs.dataparser_transform, outputs.dataparser_scale)
                if is_newest(source, step):
                    restored = self._restore_journal(pipeline, EditJournal(source.parent.parent / JOURNAL_FOLDER))
        if trainer is not None:
            self.journal = BackgroundJournal(EditJournal(Path(trainer.base_dir) / JOURNAL_FOLDER))
            self._copy_into_journal(pipeline)
        if pipeline.edit_round.active:
            self.monitor.begin(pipeline.model.gauss_params)
        if trainer is not None and step is not None:
            source = loaded_checkpoint(trainer.config)
            first = Path(trainer.checkpoint_dir) / f"step-{step:09d}.ckpt"
            if restored or source is None or source.resolve() != first.resolve():
                trainer.save_checkpoint(step)  # --load-dir <this run>/nerfstudio_models resumes it from now on
        return [
            TrainingCallback([TrainingCallbackLocation.BEFORE_TRAIN_ITERATION], self._before_step, args=[pipeline]),
            TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], self._after_step, args=[pipeline]),
        ]

    def _announce_settings(self, pipeline: IGS2GSPipeline) -> None:
        changes = changed_settings(self.state.settings, edit_settings(pipeline.config))
        if changes:
            CONSOLE.log(
                f"igs2gs: edit settings changed since the checkpoint ({'; '.join(changes)}); new edits use them"
            )

    def _restore_journal(self, pipeline: IGS2GSPipeline, journal: EditJournal) -> bool:
        """Put the journal's edits made after the loaded checkpoint into the cache and continue its round there."""
        saved, step = journal.read_state(), self.loaded_step
        assert step is not None, "_restore_journal() before the checkpoint was loaded"
        if saved is None or saved.last_step <= step:
            return False
        datamanager = pipeline.datamanager
        if saved.num_views != datamanager.num_train_views:
            CONSOLE.log(
                f"igs2gs: ignoring {journal.folder}: it is of a scene with {saved.num_views} training views, "
                f"--data has {datamanager.num_train_views}"
            )
            return False
        restored, unreadable = [], []
        for idx, edit_step in sorted(saved.view_steps.items()):
            if edit_step <= step:
                continue  # the checkpoint has this edit already
            image = journal.read_edit(idx)
            cached = datamanager.cached_train[idx]["image"]
            if image is None or tuple(image.shape) != (*cached.shape[:2], 3):
                unreadable.append(idx)
                continue
            datamanager.write_edit(idx, image.float() / 255.0)
            self.state.view_steps[idx] = edit_step
            restored.append(idx)
        pipeline.edit_round = EditRound(active=saved.active, cursor=saved.cursor, rounds_started=saved.rounds_started)
        self.state.round_start_step = saved.round_start_step
        where = f"continues at view {saved.cursor}" if saved.active else "was complete"
        CONSOLE.log(
            f"igs2gs: restored {len(restored)} edits made after the checkpoint (step {step}) from {journal.folder}, "
            f"up to step {saved.last_step}; round {saved.rounds_started} {where}"
        )
        if unreadable:
            CONSOLE.log(f"igs2gs: could not read the journal's edits of views {unreadable}; they keep the checkpoint's")
        return True

    def _copy_into_journal(self, pipeline: IGS2GSPipeline) -> None:
        """Write every edited view and the state into this run's journal."""
        assert self.journal is not None
        datamanager = pipeline.datamanager
        for idx in sorted(datamanager.edited_views):
            self.journal.write_edit(idx, to_uint8(datamanager.cached_train[idx]["image"][..., :3]))
        last = self.loaded_step if self.loaded_step is not None else -1
        self.journal.write_state(self._journal_state(pipeline, last_step=last))

    def flush_journal(self) -> None:
        """Wait for the journal's queued writes (raising the first that failed)."""
        if self.journal is not None:
            self.journal.flush()

    def _journal_state(self, pipeline: IGS2GSPipeline, last_step: int) -> JournalState:
        edit_round, datamanager = pipeline.edit_round, pipeline.datamanager
        default = self.loaded_step if self.loaded_step is not None else -1
        return JournalState(
            rounds_started=edit_round.rounds_started,
            active=edit_round.active,
            cursor=edit_round.cursor,
            round_start_step=self.state.round_start_step,
            last_step=last_step,
            num_views=datamanager.num_train_views,
            settings_hash=settings_hash(edit_settings(pipeline.config)),
            view_steps={idx: self.state.view_steps.get(idx, default) for idx in datamanager.edited_views},
        )

    # ------------------------------------------------------------------ callbacks

    def _before_step(self, pipeline: IGS2GSPipeline, step: int) -> None:
        if self._pending_rng is not None:  # right before the first step, as the interrupted run drew them
            restore_rng(pipeline.datamanager, *self._pending_rng)
            self._pending_rng = None

    def _after_step(self, pipeline: IGS2GSPipeline, step: int) -> None:
        if self._round_finished_at == step:
            self._report_round(pipeline)

    def _report_round(self, pipeline: IGS2GSPipeline) -> None:
        """The finished round's faults and how much it changed the splats; stops a run whose rounds change nothing."""
        self._round_finished_at = None
        round_number = self._finished_round
        faults = pipeline.edit_guard.take_round_faults().summary()
        if faults:
            CONSOLE.log(f"igs2gs: round {round_number}: {faults}")
        change = self.monitor.finish(pipeline.model.gauss_params)
        if change is None:
            return
        CONSOLE.log(f"igs2gs: round {round_number} changed the splats: {change.describe()}")
        holds = self._optimizers is None or optimizers_hold(self._optimizers, pipeline.model.gauss_params)
        stop_if_unchanged(change, round_number, holds, type(pipeline.model).__name__)
