"""Rounds with the editor on its own device: edits arrive in the background while training goes on (issue 6).

The CPU has one device, so the tests switch the background path on by hand (`AsyncRound`), as a second
GPU would; the editor sleeps to stand in for a slow InstructPix2Pix.
"""

from __future__ import annotations

import time

import torch

from igs2gs.async_edits import AsyncRound, edits_on_own_device
from tests.test_pipeline import InvertEditor, InvertEditorPipeline, make_trainer


class SlowInvertEditor(InvertEditor):
    delay = 0.15

    def edit(self, renders, originals, settings, generator=None):
        time.sleep(self.delay)
        return super().edit(renders, originals, settings, generator)


class AsyncInvertPipeline(InvertEditorPipeline):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.async_round = AsyncRound(batch_size=2)

    def build_editor(self):
        return SlowInvertEditor()


def test_devices_of_their_own():
    assert not edits_on_own_device("cpu", None)
    assert not edits_on_own_device("cpu", "cpu")
    assert edits_on_own_device("cpu", "cuda:1")
    assert edits_on_own_device("cuda:0", "cuda:1")


class VerySlowAsyncPipeline(AsyncInvertPipeline):
    def build_editor(self):
        editor = SlowInvertEditor()
        editor.delay = 1.0
        return editor


def _async_trainer(splatfacto_run, tmp_path, iterations, pipeline=AsyncInvertPipeline):
    trainer = make_trainer(splatfacto_run, tmp_path, iterations=iterations)
    # make_trainer injects InvertEditorPipeline; rebuild with the background path switched on
    trainer.config.pipeline._target = pipeline
    trainer.setup()
    return trainer


def test_a_background_round_edits_every_view_once_in_order(splatfacto_run, tmp_path, random_lpips_backbones):
    trainer = _async_trainer(splatfacto_run, tmp_path, iterations=40)
    pipeline, datamanager = trainer.pipeline, trainer.pipeline.datamanager
    datamanager.cached_train  # noqa: B018 (records the originals)
    originals = [image.clone() for image in datamanager.original_images]
    trainer.train()
    views = datamanager.num_train_views
    assert sum(call[0][0] for call in pipeline.editor.calls) == views, "each view edited exactly once"
    assert max(call[0][0] for call in pipeline.editor.calls) == 2  # queued views are edited together
    assert datamanager.edited_views == set(range(views))
    assert not pipeline.edit_round.active and pipeline.edit_round.rounds_started == 1
    for idx in range(views):
        expected = torch.round((1.0 - originals[idx][..., :3]) * 255) / 255
        torch.testing.assert_close(datamanager.cached_train[idx]["image"][..., :3], expected, atol=1e-6, rtol=0)
    journal = sorted(p.name for p in (trainer.base_dir / "edits").glob("*.png"))
    assert len(journal) == views


def test_edits_in_flight_at_the_last_step_are_not_lost(splatfacto_run, tmp_path, random_lpips_backbones):
    # 2 steps: the round starts at step 201, the last one, which submits what the worker has room for and
    # then must wait for it at the end of training.
    trainer = _async_trainer(splatfacto_run, tmp_path, iterations=2, pipeline=VerySlowAsyncPipeline)
    pipeline = trainer.pipeline
    trainer.train()
    edited = pipeline.datamanager.edited_views
    submitted = sum(call[0][0] for call in pipeline.editor.calls)
    assert 0 < submitted < pipeline.datamanager.num_train_views
    assert edited == set(range(submitted))  # in order, none lost
    assert pipeline.async_round.worker is None  # stopped at the end of training
    assert pipeline.edit_round.cursor == len(edited)  # the round continues there when resumed


def test_a_round_due_while_one_still_edits_follows_it():
    async_round = AsyncRound()
    assert async_round.round_may_begin(due=True, editing=False, step=10)
    assert not async_round.round_may_begin(due=True, editing=True, step=20)
    assert not async_round.round_may_begin(due=False, editing=True, step=21)
    assert async_round.round_may_begin(due=False, editing=False, step=22)  # the previous round finished
    assert not async_round.round_may_begin(due=False, editing=False, step=23)
