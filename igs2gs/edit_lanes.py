"""A round's batches shared between the editor's GPU and a helper editor on the training GPU.

With InstructPix2Pix on a second GPU, the training GPU idles about half of each training step (its steps are
bound by the processor that launches them) and all of every wait for a round's last edits (benchmarks/RESULTS.md).
With `--pipeline.ip2p-helper`, a second, uncompiled InstructPix2Pix in a process of its own on the training GPU
takes some of a round's batches:

- The helper edits only while training waits for a round's last edits (when the next round is due or training
  ends): the training GPU has nothing else to do then. A helper that edited all along made those rounds shorter,
  but two processes take turns on one GPU, and the training steps beside it took 9.4 instead of 4.6 ms (median,
  2 x H200): 87.4 against 94.7 s for the default two-GPU run, and 87.7 against 85.1 s with the compiled editor
  (benchmarks/RESULTS.md).
- The editor's own GPU gets every batch it has room for. The helper gets the next batch only when it would finish
  it no later than the editor's GPU would, behind the batches queued there: each lane's time per batch is measured
  as its edits come back (the helper is first assumed `HELPER_SLOWDOWN` times slower). So the helper never holds
  back a round's end.
- Edits reach the pipeline in the order their views were submitted, whichever lane made them: a later view that is
  done waits for the earlier ones. The round's cursor, the journal and a resumed run see the same order as with one
  editor.
- A helper that fails (a crash, no memory for its model) is closed, with a line saying so, and its views go to the
  editor's GPU with the same renders and seeds: the run loses neither a view nor an edit.
"""

from __future__ import annotations

import collections
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, List, Optional

import torch

from igs2gs.edit_worker import EditJob, EditResult, EditWorker

HELPER_SLOWDOWN = 2.0
"""How much longer the helper is taken to need per batch until both lanes have measured one: it is uncompiled, and
the editor on its own GPU may be compiled (about 1.5 times faster) or share its card with a compiling process."""
IDLE_S = 0.002
"""How long a waiting round sleeps when no lane has a result and none takes a batch."""


def helps_on(training_device: Any) -> bool:
    """Whether a helper editor may run on `training_device`: a CUDA GPU (on the CPU, an uncompiled InstructPix2Pix
    would take minutes per batch)."""
    return torch.device(training_device).type == "cuda"


@dataclass
class EditLane:
    """One editor's worker and what it holds: the jobs it was given and has not returned."""

    worker: EditWorker
    name: str
    close: Callable[[], None]
    """Stops the worker and whatever edits behind it (a helper's process)."""
    batch_seconds: Optional[float] = None
    """The time its last batch took (None until a batch came back)."""
    outstanding: Dict[int, EditJob] = field(default_factory=dict)
    """Jobs given to this lane whose results were not collected, by view."""

    def batches_held(self, batch_size: int) -> int:
        return math.ceil(len(self.outstanding) / batch_size)


class EditLanes:
    """The editor's lane and an optional helper lane: `lane_for_next` picks where the next batch goes, `submit`
    gives it there, `poll` and `drain` give results back in submission order."""

    def __init__(self, primary: EditLane, helper: Optional[EditLane], batch_size: int) -> None:
        self.primary = primary
        self.helper = helper
        self.batch_size = max(1, batch_size)
        self._order: Deque[int] = collections.deque()
        """Views submitted whose results were not yet handed out, in submission order."""
        self._done: Dict[int, EditResult] = {}
        """Results collected and waiting for an earlier view's."""
        self._retry: Deque[EditJob] = collections.deque()
        """A failed helper's jobs, for the editor's lane."""
        self.helping = False
        """Whether the helper takes batches now: only while training waits for a round's last edits (`AsyncRound`
        sets it), when the training GPU has nothing else to do."""
        self.helper_views = 0
        """Views the helper edited."""
        self._had_helper = helper is not None

    @property
    def lanes(self) -> List[EditLane]:
        return [self.primary] + ([self.helper] if self.helper is not None else [])

    def lane_for_next(self) -> Optional[EditLane]:
        """The lane that takes the next batch now, or None when it should wait: the editor's lane when it has room,
        else, while `helping`, the helper when it would finish the batch no later than the editor's lane after what
        that holds."""
        if self.primary.worker.can_submit:
            return self.primary
        helper = self.helper
        if helper is None or not self.helping or not helper.worker.can_submit:
            return None
        primary_s = self.primary.batch_seconds or 1.0
        if helper.batch_seconds is None or self.primary.batch_seconds is None:
            helper_s = primary_s * HELPER_SLOWDOWN
        else:
            helper_s = helper.batch_seconds
        helper_done = (helper.batches_held(self.batch_size) + 1) * helper_s
        primary_done = (self.primary.batches_held(self.batch_size) + 1) * primary_s
        return helper if helper_done <= primary_done else None

    def submit(self, lane: EditLane, jobs: List[EditJob]) -> None:
        """Give `jobs` (one batch, in view order) to `lane`."""
        for job in jobs:
            self._order.append(job.view)
        self._give(lane, jobs)

    def retry_pending(self) -> bool:
        """Whether a failed helper's jobs wait for the editor's lane (they go before any new view)."""
        return bool(self._retry)

    def submit_retries(self) -> None:
        """Give a failed helper's jobs to the editor's lane while it has room."""
        while self._retry and self.primary.worker.can_submit:
            jobs = [self._retry.popleft() for _ in range(min(self.batch_size, len(self._retry)))]
            self._give(self.primary, jobs)

    def poll(self) -> List[EditResult]:
        """The results that can be handed out now, in submission order, without waiting."""
        for lane in self.lanes:
            for result in lane.worker.poll():
                self._collect(lane, result)
        if self._retry:
            self.submit_retries()
        ready = []
        while self._order and self._order[0] in self._done:
            ready.append(self._done.pop(self._order.popleft()))
        return ready

    def drain(self, on_results: Callable[[List[EditResult]], None]) -> None:
        """Wait for every submitted view, handing results to `on_results` as they can be handed out."""
        while self._order:
            if self.helper is None and not self._retry:  # one editor: block until its results are in
                for result in self.primary.worker.wait():
                    self._collect(self.primary, result)
            results = self.poll()
            if results:
                on_results(results)
            else:
                time.sleep(IDLE_S)

    def close(self) -> None:
        """Stop every lane (queued jobs are dropped); say how many views a helper edited."""
        for lane in self.lanes:
            lane.close()
        if self._had_helper:
            from nerfstudio.utils.rich_utils import CONSOLE

            CONSOLE.log(f"igs2gs: the helper InstructPix2Pix on the training GPU edited {self.helper_views} views")
            self._had_helper = False
        self.helper = None

    def _give(self, lane: EditLane, jobs: List[EditJob]) -> None:
        for job in jobs:
            lane.outstanding[job.view] = job
        lane.worker.submit(*jobs)

    def _collect(self, lane: EditLane, result: EditResult) -> None:
        if result.job.view not in lane.outstanding:
            return  # a failed helper's late result: its job went to the editor's lane
        if result.error is not None and lane is self.helper:
            self._helper_failed(result.error)
            return
        del lane.outstanding[result.job.view]
        if result.error is None and result.batch_seconds > 0:
            lane.batch_seconds = result.batch_seconds
        if lane is self.helper:
            self.helper_views += 1
        self._done[result.job.view] = result

    def _helper_failed(self, error: BaseException) -> None:
        """Close the helper and give the jobs it held to the editor's lane, in view order."""
        from nerfstudio.utils.rich_utils import CONSOLE

        helper, self.helper = self.helper, None
        jobs = sorted(helper.outstanding.values(), key=lambda job: self._order.index(job.view))
        helper.outstanding.clear()
        CONSOLE.log(
            f"igs2gs: the helper InstructPix2Pix on the training GPU stopped ({type(error).__name__}: {error}); "
            f"its {len(jobs)} views go to the editor's GPU and the run goes on without it"
        )
        helper.close()
        self._retry.extend(jobs)
