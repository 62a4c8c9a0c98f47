"""Shared-memory buffers that carry the edit process's batches, reused from batch to batch.

torch.multiprocessing sends a CPU tensor by moving it into a new shared-memory segment, which the other process then
maps: for one batch of 8 views at 512 px, 16 new 3 MB segments out (renders and originals) and 8 back (edits). Here
the training process copies each batch into buffers it allocated once for that batch shape, and the child writes its
edits into a buffer that came with the batch. A buffer already shared crosses again as a handle that the receiving
process has already mapped (torch keeps a cache of them), so a batch costs copies instead of new segments.

A buffer is used by one batch at a time: it is taken when a batch is sent and given back when that batch's edits have
been copied out (`unpack`) or its error received (`release`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from igs2gs.edit_worker import EditJob

MAX_SHAPES = 4
"""Batch shapes whose free buffers are kept (a round's full batches and its last, shorter one need two)."""


@dataclass
class BatchBuffers:
    """Shared [B, 1, 3, H, W] buffers for one batch: its renders and originals, and the child's edits."""

    renders: Tensor
    originals: Tensor
    edits: Tensor

    @property
    def key(self) -> Tuple[object, ...]:
        return _key(len(self.renders), self.renders[0])


def moved(job: EditJob, device: object) -> EditJob:
    """The job with its images on `device` and no CUDA event (the sender waited for it)."""
    return EditJob(job.view, job.render.to(device), job.original.to(device), job.settings, job.seed, ready=None)


class SharedBatches:
    """The training process's side: packs batches into reused shared buffers and copies the edits out."""

    def __init__(self) -> None:
        self._free: Dict[Tuple[object, ...], List[BatchBuffers]] = {}

    def pack(self, jobs: Sequence[EditJob]) -> Tuple[List[EditJob], Optional[BatchBuffers]]:
        """The jobs with their images copied into shared buffers, and those buffers; jobs whose renders and originals
        are not all of one shape and dtype travel as new CPU tensors instead (buffers None)."""
        first = jobs[0].render
        if first.dim() != 4 or first.shape[0] != 1 or not all(_like(job, first) for job in jobs):
            return [moved(job, "cpu") for job in jobs], None
        free = self._free.get(_key(len(jobs), first))
        buffers = free.pop() if free else _allocate(len(jobs), first)
        packed = []
        for i, job in enumerate(jobs):
            buffers.renders[i].copy_(job.render)
            buffers.originals[i].copy_(job.original)
            packed.append(EditJob(job.view, buffers.renders[i], buffers.originals[i], job.settings, job.seed))
        return packed, buffers

    def unpack(self, images: Sequence[Optional[Tensor]], buffers: Optional[BatchBuffers]) -> List[Optional[Tensor]]:
        """Copies of the child's edits (which may be views of `buffers.edits`); the buffers are free again."""
        copies = [None if image is None else image.clone() for image in images]
        self.release(buffers)
        return copies

    def release(self, buffers: Optional[BatchBuffers]) -> None:
        """The buffers of a batch that is done (edited, or failed) are free for the next batch of their shape. Those
        of the least recently freed shapes are dropped beyond `MAX_SHAPES` (a scene of many image sizes)."""
        if buffers is None:
            return
        free = self._free.pop(buffers.key, [])  # re-inserted last: the dict runs from least to most recent
        self._free[buffers.key] = free + [buffers]
        while len(self._free) > MAX_SHAPES:
            del self._free[next(iter(self._free))]


def edits_into(images: Sequence[Optional[Tensor]], edits: Optional[Tensor]) -> List[Optional[Tensor]]:
    """The child's side: each edit written into its place of the shared `edits` buffer when it fits there, else as a
    new CPU tensor; None (a discarded batch) stays None."""
    out: List[Optional[Tensor]] = []
    for i, image in enumerate(images):
        if image is None:
            out.append(None)
        elif edits is not None and i < len(edits) and edits[i].shape == image.shape:
            out.append(edits[i].copy_(image.detach()))
        else:
            out.append(image.detach().float().cpu())
    return out


def _key(batch: int, image: Tensor) -> Tuple[object, ...]:
    """What buffers fit a batch of `batch` images like `image`: its length, the image's shape and dtype."""
    return (batch, *image.shape, image.dtype)


def _like(job: EditJob, first: Tensor) -> bool:
    return all(t.shape == first.shape and t.dtype == first.dtype for t in (job.render, job.original))


def _allocate(batch: int, like: Tensor) -> BatchBuffers:
    def shared() -> Tensor:
        return torch.empty((batch, *like.shape), dtype=like.dtype).share_memory_()

    return BatchBuffers(shared(), shared(), shared())
