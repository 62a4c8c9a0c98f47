"""Dataset-update rounds edited in the background while the splats train.

Used when InstructPix2Pix has a device of its own (`--pipeline.ip2p-device cuda:1`) and, with
`--pipeline.overlap-edits` (on by default), on the training GPU itself: a worker thread edits on a
CUDA stream of its own while training goes on (`edit_streams.py`). A round does not
stop training for each edit. At every step of the round the pipeline hands the worker fresh renders of
the round's next views, in index order, `edit_batch_size` at a time and while the worker has room, and
writes the edits that have finished into the image cache. Training meanwhile samples views as between
rounds, on the newest cache. Each view is still edited once per round, in index order, from a render of
the current splats, with the seed the one-device round would give it.

Rounds never fall behind: when the next round is due (or training ends) while one still edits, training
waits for that round's remaining views to be edited first. So a run does the same edits as without
overlap; only when they reach training differs. With the editor on the CPU, rounds edit in the training
step, one batch at a time, as the paper's rounds do.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable, List, Optional, Union

import torch

from igs2gs.edit_lanes import IDLE_S, EditLane, EditLanes
from igs2gs.edit_streams import editing_stream, ready_event
from igs2gs.edit_worker import EditJob, EditResult, EditWorker

if TYPE_CHECKING:
    from igs2gs.igs2gs_pipeline import IGS2GSPipeline

Device = Union[torch.device, str]


def _resolved(device: Device) -> torch.device:
    """`device` with its index; "cuda" is the current CUDA device, GPU 0 while CUDA is uninitialised (asking torch
    then would initialise CUDA, and the edit processes could no longer be forked: process_start.py)."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device() if torch.cuda.is_initialized() else 0)
    return device


def edits_on_own_device(training: Device, editing: Optional[Device]) -> bool:
    """True when the editor has a device of its own, other than the training device."""
    return editing is not None and _resolved(training) != _resolved(editing)


def edits_in_background(training: Device, editing: Optional[Device], overlap: bool) -> bool:
    """True when rounds edit in the background: the editor has a device of its own, or `overlap` is on and
    both share a CUDA device."""
    if edits_on_own_device(training, editing):
        return True
    return overlap and _resolved(editing if editing is not None else training).type == "cuda"


class AsyncRound:
    """Feeds a round's views to the edit workers (`edit_lanes.py`) and hands their results to the pipeline in view
    order as they arrive."""

    def __init__(self, batch_size: int = 1, device: Optional[Device] = None) -> None:
        self.batch_size = batch_size
        self.device = device
        """The editor's device: the worker edits on a stream of its own there when it is a CUDA device."""
        self.max_pending = 2  # submissions of batch_size views: one being edited, the next one queued
        self.lanes: Optional[EditLanes] = None
        self.next_view = 0
        """The round's next view to submit."""

    @property
    def worker(self) -> Optional[EditWorker]:
        """The editor's worker (None before the first round and after `close`)."""
        return None if self.lanes is None else self.lanes.primary.worker

    def begin(self) -> None:
        """A new round submits from its first view."""
        self.next_view = 0

    def step(self, pipeline: "IGS2GSPipeline", step: int, apply: Callable[[EditResult, int], None]) -> None:
        """Apply the edits finished so far, then submit renders of the next views while a worker has room."""
        lanes = self._lanes(pipeline)
        for result in lanes.poll():
            apply(result, step)
        self._submit_while_room(pipeline, step, lanes)

    def complete(self, pipeline: "IGS2GSPipeline", step: int, apply: Callable[[EditResult, int], None]) -> int:
        """Edit the round's remaining views now (training waits) and apply every result; return how many."""
        lanes = self._lanes(pipeline)
        applied = 0

        def apply_all(results: List[EditResult]) -> None:
            nonlocal applied
            for result in results:
                apply(result, step)
                applied += 1

        lanes.helping = True  # training waits: the training GPU is free for a helper
        try:
            self._complete(pipeline, step, lanes, apply_all)
        finally:
            lanes.helping = False
        return applied

    def _complete(
        self,
        pipeline: "IGS2GSPipeline",
        step: int,
        lanes: EditLanes,
        apply_all: Callable[[List[EditResult]], None],
    ) -> None:
        """Submit the round's remaining views wherever a lane takes them, then wait for every result."""
        while self.next_view < pipeline.datamanager.num_train_views:
            results = lanes.poll()
            apply_all(results)
            if lanes.helper is None and not lanes.retry_pending():
                self._submit_next(pipeline, step, lanes.primary)  # waits while the worker's queue is full
            elif not self._submit_while_room(pipeline, step, lanes) and not results:
                time.sleep(IDLE_S)
        lanes.drain(apply_all)

    def finish(self, pipeline: "IGS2GSPipeline", step: int, apply: Callable[[EditResult, int], None]) -> int:
        """End of training: complete the round in progress, if any, and stop the workers; return how many edits
        were applied."""
        applied = self.complete(pipeline, step, apply) if pipeline.edit_round.active else 0
        self.close()
        return applied

    def close(self) -> None:
        """Stop the workers (queued jobs are dropped)."""
        if self.lanes is not None:
            self.lanes.close()
            self.lanes = None

    def _lanes(self, pipeline: "IGS2GSPipeline") -> EditLanes:
        if self.lanes is None:
            # Nothing is in flight: the round goes on at its first view not yet edited (a resumed run's is restored
            # from the checkpoint or the edit journal).
            self.next_view = pipeline.edit_round.cursor
            stream = editing_stream(self.device) if self.device is not None else None
            if pipeline.edit_process is not None:
                # The edit process holds the next batch while it edits one (the worker sends ahead): one submission
                # queued in the worker keeps renders as fresh as one edited and two queued in this process.
                edit, max_pending = pipeline.edit_process, max(1, self.max_pending - 1)
            else:
                edit, max_pending = pipeline.edit_jobs, self.max_pending
            worker = EditWorker(edit, max_pending=max_pending, batch_size=self.batch_size, stream=stream)
            primary = EditLane(worker, "editor", close=worker.close)
            self.lanes = EditLanes(primary, self._helper_lane(pipeline), self.batch_size)
        return self.lanes

    def _helper_lane(self, pipeline: "IGS2GSPipeline") -> Optional[EditLane]:
        """The helper editor's lane on the training GPU (`--pipeline.ip2p-helper`), if the run has one."""
        process = getattr(pipeline, "helper_process", None)
        if process is None:
            return None
        worker = EditWorker(process, max_pending=1, batch_size=self.batch_size)

        def close() -> None:
            worker.close()
            process.stop()  # its exit is waited for at the run's end (IGS2GSPipeline.join_edit_processes)

        return EditLane(worker, "helper", close=close)

    def _submit_while_room(self, pipeline: "IGS2GSPipeline", step: int, lanes: EditLanes) -> bool:
        """Submit the round's next batches while a lane takes them (a failed helper's views go first); whether any
        was submitted."""
        submitted = False
        while self.next_view < pipeline.datamanager.num_train_views and not lanes.retry_pending():
            lane = lanes.lane_for_next()
            if lane is None:
                break
            self._submit_next(pipeline, step, lane)
            submitted = True
        return submitted

    def _submit_next(self, pipeline: "IGS2GSPipeline", step: int, lane: EditLane) -> None:
        """Submit the next `batch_size` views of the round to `lane`, rendered from the same splat state."""
        batch = range(self.next_view, min(self.next_view + self.batch_size, pipeline.datamanager.num_train_views))
        self.lanes.submit(lane, [pipeline.make_edit_job(view, step) for view in batch])
        self.next_view = batch.stop


def make_job(pipeline: "IGS2GSPipeline", idx: int, step: int, seed: int) -> EditJob:
    """A job for view `idx`: its current render and its original photo, [1, 3, H, W] on the training device."""
    from igs2gs.fast_edits import render_for_edit

    render = render_for_edit(pipeline, idx)
    original = pipeline.datamanager.original_image(idx).to(render.device)
    render, original = render.permute(2, 0, 1)[None].float(), original.permute(2, 0, 1)[None].float()
    settings, ready = pipeline.edit_settings(), ready_event(original)
    return EditJob(view=idx, render=render, original=original, settings=settings, seed=seed, ready=ready)
