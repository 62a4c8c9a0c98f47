"""Dataset-update rounds with InstructPix2Pix on its own device: edits run while the splats train.

With `--pipeline.ip2p-device` naming another device than training, a round does not stop training
for each edit. At every step of the round the pipeline hands a background worker (`edit_worker.py`)
fresh renders of the round's next views, in index order, while the worker has room, and writes the
edits that have finished into the image cache. Training meanwhile samples views as between rounds,
on the newest cache. The round ends when the last view's edit has been written. Each view is still
edited once per round, in index order, from a render of the current splats, with the seed of the step
that rendered it. With one device nothing changes: the round edits one view per step, as the paper does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional, Union

import torch
from nerfstudio.utils.rich_utils import CONSOLE

from igs2gs.edit_worker import EditJob, EditResult, EditWorker

if TYPE_CHECKING:
    from igs2gs.igs2gs_pipeline import IGS2GSPipeline

Device = Union[torch.device, str]


def _resolved(device: Device) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def edits_on_own_device(training: Device, editing: Optional[Device]) -> bool:
    """True when the editor has a device of its own, other than the training device."""
    return editing is not None and _resolved(training) != _resolved(editing)


class AsyncRound:
    """Feeds a round's views to an `EditWorker` and hands its results to the pipeline as they arrive."""

    def __init__(self, batch_size: int = 1) -> None:
        self.batch_size = batch_size
        self.max_pending = 2  # submissions of batch_size views: one being edited, the next one queued
        self.worker: Optional[EditWorker] = None
        self.next_view = 0
        """The round's next view to submit."""
        self.round_due = False
        """A round came due while the previous one was still editing."""

    def round_may_begin(self, due: bool, editing: bool, step: int) -> bool:
        """Whether a round begins now: each view is edited once per round, so a round that comes due while the
        previous one still edits begins right after it."""
        if due and editing:
            self.round_due = True
            CONSOLE.log(f"igs2gs: step {step}: a round is due but the previous one is still editing; it follows it")
            return False
        if self.round_due and not editing:
            self.round_due = False
            return True
        return due

    def begin(self) -> None:
        """A new round submits from its first view."""
        self.next_view = 0

    def step(self, pipeline: "IGS2GSPipeline", step: int, apply: Callable[[EditResult, int], None]) -> None:
        """Apply the edits finished so far, then submit renders of the next views while the worker has room."""
        if self.worker is None:
            self.worker = EditWorker(pipeline.edit_jobs, max_pending=self.max_pending, batch_size=self.batch_size)
        for result in self.worker.poll():
            apply(result, step)
        views = pipeline.datamanager.num_train_views
        while self.next_view < views and self.worker.can_submit:  # a batch rendered from the same splat state
            batch = range(self.next_view, min(self.next_view + self.batch_size, views))
            self.worker.submit(*(pipeline.make_edit_job(view, step) for view in batch))
            self.next_view = batch.stop

    def finish(self, step: int, apply: Callable[[EditResult, int], None]) -> int:
        """Wait for the edits in flight, apply them and stop the worker (end of training); return how many."""
        if self.worker is None:
            return 0
        results = self.worker.wait()
        self.close()
        for result in results:
            apply(result, step)
        return len(results)

    def close(self) -> None:
        """Stop the worker (queued jobs are dropped)."""
        if self.worker is not None:
            self.worker.close()
            self.worker = None


def make_job(pipeline: "IGS2GSPipeline", idx: int, step: int, seed: int) -> EditJob:
    """A job for view `idx`: its current render and its original photo, [1, 3, H, W] on the training device."""
    from igs2gs.fast_edits import render_for_edit

    render = render_for_edit(pipeline, idx)
    original = pipeline.datamanager.original_image(idx).to(render.device)
    return EditJob(
        view=idx,
        render=render.permute(2, 0, 1)[None].float(),
        original=original.permute(2, 0, 1)[None].float(),
        settings=pipeline.edit_settings(),
        seed=seed,
    )
