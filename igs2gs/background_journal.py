"""The edit journal (`edit_journal.py`) written on a thread of its own, so training steps do not wait for it.

Journalling an edit copies the 512 px image to the CPU (which waits for the GPU's queued work) and encodes a PNG:
16-25 ms per view on a 2-core CPU, once per edited view, on the training thread. PNG encoding releases the GIL,
so on a thread of its own it overlaps the training steps. The writes keep their order (one thread, first in first
out), so the journal's state still never names an image that is not on disk yet.

`flush` waits for the writes so far and raises the first one that failed. The keeper flushes before every
checkpoint (or hands the checkpoint's writer thread the writes queued so far to wait for: `queued`), and the trainer
when training stops, by Ctrl-C or an error too (`trainer_config.IGS2GSTrainer`).
Writes still queued when the process exits are done before it ends (`concurrent.futures` finishes its queue).
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Deque, List, Optional

import torch

from igs2gs.edit_journal import EditJournal, JournalState


class BackgroundJournal:
    """`EditJournal.write_edit` and `write_state`, done in order on a writer thread."""

    def __init__(self, journal: EditJournal) -> None:
        self.journal = journal
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="igs2gs-journal")
        self._pending: Deque[Future] = deque()

    def write_edit(self, idx: int, image: torch.Tensor) -> None:  # image: [H, W, 3] uint8, not changed afterwards
        """Queue the edit of view `idx`. A CUDA image is copied once the work queued for it so far is done."""
        ready: Optional[torch.cuda.Event] = None
        if image.is_cuda:
            ready = torch.cuda.Event()
            ready.record(torch.cuda.current_stream(image.device))
        self._submit(_write_when_ready, self.journal, idx, image, ready)

    def write_state(self, state: JournalState) -> None:
        """Queue the journal's state, after the images queued before it."""
        self._submit(self.journal.write_state, state)

    def flush(self) -> None:
        """Wait for the queued writes; raise the first that failed."""
        while self._pending:
            self._pending.popleft().result()

    def queued(self) -> List[Future]:
        """The writes queued so far and not yet seen done: waiting for them (on any thread) waits for every write
        queued until now."""
        return list(self._pending)

    def _submit(self, write: Callable[..., None], *args: Any) -> None:
        while self._pending and self._pending[0].done():  # a failed write stops the run at the next one
            self._pending.popleft().result()
        self._pending.append(self._writer.submit(write, *args))


def _write_when_ready(journal: EditJournal, idx: int, image: torch.Tensor, ready: Optional[torch.cuda.Event]) -> None:
    if ready is not None:
        ready.synchronize()
    journal.write_edit(idx, image)
