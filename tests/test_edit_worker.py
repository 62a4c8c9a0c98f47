"""The background edit worker: order, exactly one result per job, errors, and clean shutdown."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from igs2gs.edit_worker import EditJob, EditWorker, EditWorkerError
from igs2gs.editor import EditSettings

SETTINGS = EditSettings(prompt="make it blue")


class SlowEditor:
    """Adds the view index to the original after a short, view-dependent delay; fails on request."""

    def __init__(self, fail_on=(), delay=0.01):
        self.fail_on, self.delay = set(fail_on), delay
        self.seen = []
        self.started = threading.Event()

    def edit(self, renders, originals, settings, generator=None):
        self.started.set()
        view = int(renders[0, 0, 0, 0])
        self.seen.append(view)
        time.sleep(self.delay * (1 + view % 3))
        if view in self.fail_on:
            raise RuntimeError(f"boom on view {view}")
        return originals + view + torch.rand(1, generator=generator)


def seeded(editor):
    """The edit function the pipeline hands the worker: the editor with each job's seed, one job at a time."""
    return lambda jobs: [
        editor.edit(job.render, job.original, job.settings, generator=torch.Generator().manual_seed(job.seed))
        for job in jobs
    ]


def job(view: int, seed: int = 0) -> EditJob:
    return EditJob(view, torch.full((1, 3, 8, 8), float(view)), torch.zeros(1, 3, 8, 8), SETTINGS, seed=seed)


def test_every_job_yields_one_result_in_submission_order():
    with EditWorker(seeded(SlowEditor()), max_pending=2) as worker:
        results = []
        for view in range(10):
            while not worker.can_submit:
                results += worker.poll()
                time.sleep(0.001)
            worker.submit(job(view))
            results += worker.poll()
        results += worker.wait()
    assert [r.job.view for r in results] == list(range(10))
    assert all(r.error is None and r.image.device.type == "cpu" for r in results)
    assert worker.pending == 0


def test_poll_does_not_wait_and_results_are_seeded():
    editor = SlowEditor(delay=0.2)
    with EditWorker(seeded(editor)) as worker:
        worker.submit(job(1, seed=7))
        started = time.perf_counter()
        assert worker.poll() == []
        assert time.perf_counter() - started < 0.1
        first = worker.wait()[0].image
        worker.submit(job(1, seed=7))
        assert torch.equal(worker.wait()[0].image, first)


def test_an_error_is_returned_with_its_job_and_the_worker_goes_on():
    with EditWorker(seeded(SlowEditor(fail_on={3}))) as worker:
        for view in range(5):
            worker.submit(job(view))
        results = worker.wait()
    assert [r.job.view for r in results] == [0, 1, 2, 3, 4]
    assert isinstance(results[3].error, RuntimeError) and "view 3" in str(results[3].error)
    assert all(r.error is None for i, r in enumerate(results) if i != 3)


def test_ctrl_c_in_the_training_loop_stops_the_worker():
    editor = SlowEditor(delay=0.05)
    with pytest.raises(KeyboardInterrupt):
        with EditWorker(seeded(editor), max_pending=3) as worker:
            for view in range(3):
                worker.submit(job(view))
            editor.started.wait(5)
            raise KeyboardInterrupt
    assert not worker.alive
    assert len(editor.seen) < 3  # queued jobs were dropped, not edited
    with pytest.raises(EditWorkerError, match="after close"):
        worker.submit(job(9))


def test_queued_jobs_are_edited_together_up_to_the_batch_size():
    batches = []
    started = threading.Event()

    def edit(jobs):
        batches.append([job.view for job in jobs])
        started.wait(5)
        return [job.original + job.view for job in jobs]

    with EditWorker(edit, max_pending=8, batch_size=3) as worker:
        for view in range(7):
            worker.submit(job(view))
        started.set()
        results = worker.wait()
    assert [r.job.view for r in results] == list(range(7))
    assert sorted(v for b in batches for v in b) == list(range(7)) and max(len(b) for b in batches) == 3
    assert all(torch.equal(r.image, torch.full((1, 3, 8, 8), float(r.job.view))) for r in results)


def test_each_result_carries_its_share_and_its_whole_batchs_time():
    def edit(jobs):
        time.sleep(0.06)
        return [job.original for job in jobs]

    with EditWorker(edit, max_pending=4, batch_size=3) as worker:
        for view in range(3):
            worker.submit(job(view))
        results = worker.wait()
    batches = {}
    for r in results:
        batches.setdefault(r.batch_seconds, []).append(r)
    for batch_seconds, members in batches.items():
        assert batch_seconds >= 0.06
        assert all(r.seconds == pytest.approx(batch_seconds / len(members)) for r in members)


def test_close_is_idempotent_and_max_pending_is_checked():
    worker = EditWorker(seeded(SlowEditor()))
    worker.close()
    worker.close()
    assert not worker.alive
    with pytest.raises(ValueError, match="batch_size"):
        EditWorker(seeded(SlowEditor()), max_pending=0)


def test_the_job_in_progress_finishes_before_the_interpreter_exits(tmp_path):
    # A worker thread killed inside CUDA at exit aborts the process ("terminate called without an active
    # exception"): the worker stops itself at exit, after the job in progress.
    import subprocess
    import sys
    import textwrap

    done = tmp_path / "done"
    code = f"""
        import time, torch
        from igs2gs.edit_worker import EditJob, EditWorker
        from igs2gs.editor import EditSettings

        def edit(jobs):
            time.sleep(0.5)
            open({str(done)!r}, "w").write("ok")
            return [None for _ in jobs]

        worker = EditWorker(edit)
        worker.submit(EditJob(0, torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8), EditSettings("x"), seed=0))
        time.sleep(0.1)  # the job is in progress when the script ends
    """
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert done.read_text() == "ok"


class PipelinedDoubler:
    """A `PipelinedEdits` stand-in: doubles renders. The first `send` waits for `submitted`, `receive` for `gate`;
    the batches of `fail_on` fail."""

    def __init__(self, fail_on=()):
        self.fail_on = set(fail_on)
        self.submitted, self.gate = threading.Event(), threading.Event()
        self.sent: list = []
        self.most_in_flight = 0
        self.in_flight: list = []

    def send(self, jobs):
        assert self.submitted.wait(10)
        self.sent.append([job.view for job in jobs])
        self.in_flight.append(jobs)
        self.most_in_flight = max(self.most_in_flight, len(self.in_flight))

    def receive(self):
        assert self.gate.wait(10)
        jobs = self.in_flight.pop(0)
        if self.fail_on & {job.view for job in jobs}:
            raise RuntimeError(f"boom on {[job.view for job in jobs]}")
        return [job.render * 2 for job in jobs]


def test_a_pipelined_editor_gets_the_next_batch_before_the_first_comes_back():
    editor = PipelinedDoubler(fail_on={1})
    with EditWorker(editor, max_pending=8, batch_size=2, in_flight=2) as worker:
        for view in range(7):
            worker.submit(job(view))
        editor.submitted.set()
        time.sleep(0.2)
        assert len(editor.sent) == 2 and worker.pending == 7, "two batches sent ahead, none received yet"
        editor.gate.set()
        results = worker.wait()
    assert editor.most_in_flight == 2
    assert [r.job.view for r in results] == list(range(7)), "every job once, in submission order"
    failed = [r.job.view for r in results if r.error is not None]
    assert failed == next(batch for batch in editor.sent if 1 in batch), "an error fails its own batch only"
    assert all(torch.equal(r.image, job(r.job.view).render * 2) for r in results if r.error is None)


def test_closing_a_pipelined_worker_collects_what_was_sent():
    editor = PipelinedDoubler()
    worker = EditWorker(editor, max_pending=8, in_flight=2)
    for view in range(5):
        worker.submit(job(view))
    editor.submitted.set()
    time.sleep(0.2)
    editor.gate.set()
    worker.close()
    assert not worker.alive
    sent = [view for batch in editor.sent for view in batch]
    assert len(sent) >= 2 and editor.in_flight == [], "what was sent was received"
    assert [r.job.view for r in worker.poll()] == sent and worker.pending == 0, "queued jobs were dropped"


class PolledDoubler(PipelinedDoubler):
    """A `PolledEdits` stand-in: as PipelinedDoubler, with room for `room` batches, and a `receive` that returns None
    while `gate` is closed and a timeout is given."""

    def __init__(self, room: int = 2):
        super().__init__()
        self.room = room
        self.submitted.set()

    def can_send(self, in_flight):
        return len(self.in_flight) < min(in_flight, self.room)

    def receive(self, timeout=None):
        if not self.gate.wait(timeout if timeout is not None else 10):
            return None
        return super().receive()


def test_a_polled_editor_gets_a_batch_submitted_while_an_older_one_is_edited():
    editor = PolledDoubler()
    with EditWorker(editor, max_pending=8, in_flight=2) as worker:
        worker.submit(job(0))
        time.sleep(0.2)
        worker.submit(job(1))  # the worker is waiting for batch 0 by now
        time.sleep(0.2)
        assert editor.sent == [[0], [1]], "sent before batch 0 came back"
        editor.gate.set()
        results = worker.wait()
    assert [r.job.view for r in results] == [0, 1] and all(r.error is None for r in results)


def test_a_polled_editor_decides_how_many_batches_go_ahead():
    editor = PolledDoubler(room=1)
    with EditWorker(editor, max_pending=8, in_flight=2) as worker:
        for view in range(4):
            worker.submit(job(view))
        time.sleep(0.2)
        assert editor.sent == [[0]], "its room, not the worker's in_flight"
        editor.gate.set()
        assert [r.job.view for r in worker.wait()] == [0, 1, 2, 3]
    assert editor.most_in_flight == 1
