"""Rounds edited in the background while training goes on (issues 3 and 6).

The CPU has one device and edits there in the training step, so the tests switch the background path on
by hand (`AsyncRound`), as a second GPU or `overlap_edits` on a GPU would; the editor sleeps to stand in
for a slow InstructPix2Pix.
"""

from __future__ import annotations

import time

import pytest
import torch

from igs2gs.async_edits import AsyncRound, edits_in_background, edits_on_own_device
from igs2gs.edit_schedule import EditRound
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


def test_which_runs_edit_in_the_background():
    assert not edits_in_background("cpu", None, overlap=True)  # the CPU edits in the training step
    assert edits_in_background("cpu", "cuda:1", overlap=False)  # a device of its own: always
    assert edits_in_background("cuda:0", None, overlap=True)
    assert edits_in_background("cuda:0", "cuda:0", overlap=True)
    assert not edits_in_background("cuda:0", None, overlap=False)


class VerySlowAsyncPipeline(AsyncInvertPipeline):
    def build_editor(self):
        editor = SlowInvertEditor()
        editor.delay = 0.4
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


def test_training_ends_only_after_the_round_in_progress_is_edited(splatfacto_run, tmp_path, random_lpips_backbones):
    # 2 steps: the round starts at step 201, the last one; the worker has room for only part of it then,
    # so the end of training renders and edits the rest before it stops the worker.
    trainer = _async_trainer(splatfacto_run, tmp_path, iterations=2, pipeline=VerySlowAsyncPipeline)
    pipeline = trainer.pipeline
    trainer.train()
    views = pipeline.datamanager.num_train_views
    calls = [call[0][0] for call in pipeline.editor.calls]
    assert sum(calls) == views and len(calls) > 1
    assert pipeline.datamanager.edited_views == set(range(views))
    assert pipeline.async_round.worker is None  # stopped at the end of training
    assert not pipeline.edit_round.active and pipeline.edit_round.rounds_started == 1
    assert len(list((trainer.base_dir / "edits").glob("*.png"))) == views  # journalled, none lost


class RoundEveryFewStepsPipeline(AsyncInvertPipeline):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.config.gs_steps = 4  # from the step-199 checkpoint: rounds due at steps 201, 205, 209
        self.round_starts = []

    def get_train_loss_dict(self, step):
        before = self.edit_round.rounds_started
        out = super().get_train_loss_dict(step)
        if self.edit_round.rounds_started != before:
            self.round_starts.append((step, len(self.datamanager.edited_views)))
        return out


def test_a_round_due_while_one_still_edits_waits_for_it(splatfacto_run, tmp_path, random_lpips_backbones):
    # A slow editor cannot edit 11 views in 4 steps: each new round must wait for the previous one to end.
    trainer = _async_trainer(splatfacto_run, tmp_path, iterations=10, pipeline=RoundEveryFewStepsPipeline)
    pipeline = trainer.pipeline
    trainer.train()
    views = pipeline.datamanager.num_train_views
    assert [step for step, _ in pipeline.round_starts] == [201, 205, 209]  # every round began at its step
    assert pipeline.edit_round.rounds_started == 3
    assert sum(call[0][0] for call in pipeline.editor.calls) == 3 * views  # every round edited every view once
    assert all(edited == views for _, edited in pipeline.round_starts[1:])  # the previous round had ended


def test_a_resumed_round_goes_on_at_its_first_unedited_view(splatfacto_run, tmp_path, random_lpips_backbones):
    # As a run resumed from a checkpoint taken mid-round: views 0..3 were edited, the round waits at view 4.
    trainer = _async_trainer(splatfacto_run, tmp_path, iterations=1)
    pipeline = trainer.pipeline
    pipeline.edit_round = EditRound(active=True, cursor=4, rounds_started=1)
    pipeline.keeper.state.round_start_step = 150
    trainer.train()  # step 200: no new round; the round in progress is edited to its end
    views = pipeline.datamanager.num_train_views
    assert pipeline.datamanager.edited_views == set(range(4, views))
    assert sum(call[0][0] for call in pipeline.editor.calls) == views - 4  # each remaining view once
    assert not pipeline.edit_round.active and pipeline.edit_round.rounds_started == 1


class MissingWeightsAsyncPipeline(AsyncInvertPipeline):
    def build_editor(self):
        from igs2gs.ip2p import IP2PLoadError

        raise IP2PLoadError("Could not load the InstructPix2Pix weights of 'nowhere'")


def test_weights_that_do_not_load_in_the_worker_stop_the_run_with_their_message(
    splatfacto_run, tmp_path, random_lpips_backbones
):
    from igs2gs.errors import IGS2GSConfigError

    trainer = _async_trainer(splatfacto_run, tmp_path, iterations=5, pipeline=MissingWeightsAsyncPipeline)
    with pytest.raises(IGS2GSConfigError, match="weights of 'nowhere'"):
        trainer.train()
    assert trainer.pipeline.async_round.worker is None  # stopped, no thread left behind
    assert trainer.pipeline.datamanager.edited_views == set()
