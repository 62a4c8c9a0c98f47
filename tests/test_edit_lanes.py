"""A round's batches shared between the editor and a helper on the training GPU (igs2gs/edit_lanes.py)."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import torch

import igs2gs.igs2gs_pipeline as pipeline_module
from igs2gs.edit_lanes import HELPER_SLOWDOWN, EditLane, EditLanes
from igs2gs.edit_worker import EditJob, EditWorker
from igs2gs.editor import EditSettings
from tests.test_edit_process import PidEditor, ProcessInvertPipeline
from tests.test_pipeline import make_trainer

SETTINGS = EditSettings(prompt="invert it")


def job(view: int) -> EditJob:
    return EditJob(view, torch.full((1, 3, 4, 4), float(view)), torch.zeros(1, 3, 4, 4), SETTINGS, seed=view)


class LaneEditor:
    """Edits a batch after `delay` seconds into images that carry the view and this editor's `mark`; fails on the
    views in `fail_on`; records the views it edited."""

    def __init__(self, mark: float, delay: float, fail_on=()) -> None:
        self.mark, self.delay, self.fail_on = mark, delay, set(fail_on)
        self.views: list = []

    def __call__(self, jobs):
        time.sleep(self.delay)
        if self.fail_on & {j.view for j in jobs}:
            raise RuntimeError("the helper's GPU ran out of memory")
        self.views += [j.view for j in jobs]
        return [torch.stack([torch.full((4, 4), float(j.view)), torch.full((4, 4), self.mark)])[None] for j in jobs]


def lane(editor, name: str, closed: list, max_pending: int = 1) -> EditLane:
    worker = EditWorker(editor, max_pending=max_pending, batch_size=2)

    def close() -> None:
        worker.close()
        closed.append(name)

    return EditLane(worker, name, close=close)


def submit_round(lanes: EditLanes, views: int, batch: int = 2) -> list:
    """Submit views 0..views-1 in batches wherever `lane_for_next` says, collecting results as a round does."""
    results, next_view = [], 0
    lanes.helping = True  # as while training waits for the round's last edits
    while next_view < views:
        results += lanes.poll()
        target = lanes.lane_for_next()
        if target is None:
            time.sleep(0.002)
            continue
        lanes.submit(target, [job(v) for v in range(next_view, min(next_view + batch, views))])
        next_view += batch
    lanes.drain(results.extend)
    return results


def test_edits_come_back_in_view_order_whichever_lane_made_them():
    closed: list = []
    fast, slow = LaneEditor(mark=1.0, delay=0.03), LaneEditor(mark=2.0, delay=0.05)
    lanes = EditLanes(lane(fast, "editor", closed), lane(slow, "helper", closed), batch_size=2)
    results = submit_round(lanes, views=24)
    lanes.close()
    assert [r.job.view for r in results] == list(range(24)), "in view order, each view once"
    assert all(r.error is None and r.image[0, 0, 0, 0] == r.job.view for r in results)
    assert slow.views and fast.views, "both lanes edited"
    assert sorted(fast.views + slow.views) == list(range(24)), "no view edited twice"
    assert lanes.helper_views == len(slow.views)
    assert sorted(closed) == ["editor", "helper"]


def _stub_lane(name: str, can_submit: bool, held: int, batch_seconds) -> EditLane:
    worker = SimpleNamespace(can_submit=can_submit)
    lane = EditLane(worker, name, close=lambda: None, batch_seconds=batch_seconds)
    lane.outstanding = {view: None for view in range(held)}
    return lane


def test_the_helper_takes_a_batch_only_when_it_would_finish_it_no_later_than_the_editor():
    def pick(primary, helper, helping=True):
        lanes = EditLanes(primary, helper, batch_size=8)
        lanes.helping = helping
        chosen = lanes.lane_for_next()
        return None if chosen is None else chosen.name

    # the editor's GPU gets every batch it has room for
    assert pick(_stub_lane("editor", True, 16, 1.0), _stub_lane("helper", True, 0, 0.1)) == "editor"
    # full editor: 3 batches queued there (4 s to finish a 4th); the helper needs 3 s for one
    assert pick(_stub_lane("editor", False, 24, 1.0), _stub_lane("helper", True, 0, 3.0)) == "helper"
    # ... only while training waits for the round: otherwise it would slow every training step beside it
    assert pick(_stub_lane("editor", False, 24, 1.0), _stub_lane("helper", True, 0, 0.1), helping=False) is None
    # ... and 6 s when it holds one already: the batch waits for the editor
    assert pick(_stub_lane("editor", False, 24, 1.0), _stub_lane("helper", True, 8, 3.0)) is None
    # a helper that is not measured yet counts as HELPER_SLOWDOWN times slower than the editor
    assert pick(_stub_lane("editor", False, 8, 1.0), _stub_lane("helper", True, 0, None)) == (
        "helper" if HELPER_SLOWDOWN <= 2 else None
    )
    assert pick(_stub_lane("editor", False, 0, 1.0), _stub_lane("helper", True, 0, None)) is None
    # no helper, or a helper without room
    assert pick(_stub_lane("editor", False, 24, 1.0), None) is None
    assert pick(_stub_lane("editor", False, 24, 1.0), _stub_lane("helper", False, 0, 0.1)) is None


def test_a_failing_helper_hands_its_views_to_the_editor_and_the_round_goes_on(capsys):
    closed: list = []
    editor, helper = LaneEditor(mark=1.0, delay=0.03), LaneEditor(mark=2.0, delay=0.01, fail_on=range(100))
    lanes = EditLanes(lane(editor, "editor", closed), lane(helper, "helper", closed), batch_size=2)
    results = submit_round(lanes, views=20)
    assert [r.job.view for r in results] == list(range(20)), "every view once, in order"
    assert all(r.error is None and r.image[0, 1, 0, 0] == 1.0 for r in results), "all edited by the editor"
    assert sorted(editor.views) == list(range(20))
    assert closed == ["helper"] and lanes.helper is None
    assert "its 2 views go to the editor's GPU" in capsys.readouterr().out
    lanes.close()


def test_an_editor_error_still_reaches_the_round_in_order():
    closed: list = []
    editor = LaneEditor(mark=1.0, delay=0.01, fail_on=[4])
    lanes = EditLanes(lane(editor, "editor", closed, max_pending=2), None, batch_size=2)
    results = submit_round(lanes, views=8)
    lanes.close()
    assert [r.job.view for r in results] == list(range(8))
    assert [r.job.view for r in results if r.error is not None] == [4, 5], "the failed batch's views carry its error"


class SlowPidEditor(PidEditor):
    def edit(self, renders, originals, settings, generator=None):
        time.sleep(0.3)
        return super().edit(renders, originals, settings, generator)


def slow_pid_editor(config, device):
    return SlowPidEditor()


class HelpedPipeline(ProcessInvertPipeline):
    """Edits in an edit process and a helper process; the editor is slow, so the helper gets batches."""

    process_editor_builder = slow_pid_editor


def test_a_run_with_a_helper_edits_every_view_once_and_stops_both_processes(
    splatfacto_run, tmp_path, random_lpips_backbones, monkeypatch, capsys
):
    # 3 steps: the round starts at step 201 and training ends at 202, waiting for most of the round: the helper's turn
    trainer = make_trainer(splatfacto_run, tmp_path, iterations=3)
    monkeypatch.setattr(pipeline_module, "edits_in_background", lambda *args: True)
    monkeypatch.setattr(pipeline_module, "edits_on_own_device", lambda *args: True)
    monkeypatch.setattr(pipeline_module, "helps_on", lambda device: True)  # the CPU stands in for the training GPU
    trainer.config.pipeline._target = HelpedPipeline
    trainer.config.pipeline.ip2p_helper = True
    trainer.config.pipeline.edit_batch_size = 2  # batches enough for both lanes
    trainer.setup()
    pipeline, datamanager = trainer.pipeline, trainer.pipeline.datamanager
    assert pipeline.helper_process is not None and pipeline.helper_process.alive
    originals = [image.clone() for image in datamanager.original_images]
    trainer.train()
    views = datamanager.num_train_views
    assert datamanager.edited_views == set(range(views))
    for idx, original in enumerate(originals):
        expected = torch.round((1.0 - original[..., :3]) * 255) / 255
        torch.testing.assert_close(datamanager.cached_train[idx]["image"][..., 1:, 1:, :3], expected[1:, 1:])
    assert len(list((trainer.base_dir / "edits").glob("*.png"))) == views, "journalled in full"
    out = capsys.readouterr().out
    edited_by_helper = int(out.split("on the training GPU edited ")[1].split()[0])
    assert 0 < edited_by_helper < views
    assert not pipeline.helper_process.alive and not pipeline.edit_process.alive


def test_a_helper_is_only_started_where_it_can_help(splatfacto_run, tmp_path, random_lpips_backbones, capsys):
    trainer = make_trainer(splatfacto_run, tmp_path)
    trainer.config.pipeline.ip2p_helper = True  # one device, the CPU: nothing to help
    trainer.setup()
    assert trainer.pipeline.helper_process is None
    assert "this run has no helper" in capsys.readouterr().out


def test_the_helper_lanes_never_leave_a_thread_behind():
    closed: list = []
    before = set(threading.enumerate())  # threads of earlier tests may end meanwhile: only new ones count
    lanes = EditLanes(
        lane(LaneEditor(1.0, 0.01), "editor", closed), lane(LaneEditor(2.0, 0.02), "helper", closed), batch_size=2
    )
    submit_round(lanes, views=6)
    lanes.close()
    deadline = time.monotonic() + 5
    while set(threading.enumerate()) - before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not set(threading.enumerate()) - before
