"""Batches to the edit process and edits back through reused shared-memory buffers (igs2gs/shared_batches.py)."""

from __future__ import annotations

import torch

from igs2gs.edit_worker import EditJob
from igs2gs.editor import EditSettings
from igs2gs.shared_batches import MAX_SHAPES, SharedBatches, edits_into

SETTINGS = EditSettings(prompt="x")


def _jobs(views, size=(16, 24)):
    return [EditJob(v, torch.rand(1, 3, *size), torch.rand(1, 3, *size), SETTINGS, seed=v) for v in views]


def test_a_batch_is_copied_into_shared_buffers_that_the_next_batch_reuses():
    batches = SharedBatches()
    jobs = _jobs([3, 4])
    packed, buffers = batches.pack(jobs)
    assert buffers is not None and buffers.renders.is_shared() and buffers.edits.is_shared()
    for job, sent in zip(jobs, packed):
        assert (sent.view, sent.seed) == (job.view, job.seed)
        assert torch.equal(sent.render, job.render) and torch.equal(sent.original, job.original)
        assert sent.render.untyped_storage().data_ptr() == buffers.renders.untyped_storage().data_ptr()
    _, in_flight = batches.pack(_jobs([5, 6]))
    assert in_flight.renders.data_ptr() != buffers.renders.data_ptr(), "a batch in flight keeps its buffers"
    batches.unpack([None, None], buffers)
    _, again = batches.pack(_jobs([7, 8]))
    assert again is buffers, "buffers come back free once their batch is done"


def test_edits_are_copied_out_before_their_buffer_is_reused():
    batches = SharedBatches()
    _, buffers = batches.pack(_jobs([0, 1]))
    edited = edits_into([torch.full((1, 3, 16, 24), 0.5), None], buffers.edits)
    assert edited[0].data_ptr() == buffers.edits[0].data_ptr() and edited[1] is None, "written in place"
    copies = batches.unpack(edited, buffers)
    buffers.edits.zero_()  # the next batch's edits
    assert torch.equal(copies[0], torch.full((1, 3, 16, 24), 0.5)) and copies[1] is None


def test_batches_of_mixed_shapes_travel_as_new_tensors():
    batches = SharedBatches()
    jobs = _jobs([0]) + _jobs([1], size=(8, 8))
    packed, buffers = batches.pack(jobs)
    assert buffers is None and [tuple(job.render.shape) for job in packed] == [(1, 3, 16, 24), (1, 3, 8, 8)]
    batches.release(buffers)  # nothing to give back
    edit = torch.rand(1, 3, 32, 48)  # an edit of another size than its buffer's place
    _, buffers = batches.pack(_jobs([2]))
    (out,) = edits_into([edit], buffers.edits)
    assert torch.equal(out, edit) and out.data_ptr() != buffers.edits.data_ptr()


def test_free_buffers_are_kept_for_the_most_recent_shapes_only():
    batches = SharedBatches()
    for side in range(8, 8 + MAX_SHAPES + 2):
        _, buffers = batches.pack(_jobs([0], size=(side, side)))
        batches.release(buffers)
    kept = sorted(key[-2] for key in batches._free)
    assert kept == list(range(8 + 2, 8 + MAX_SHAPES + 2)), "the least recently used shapes were dropped"
