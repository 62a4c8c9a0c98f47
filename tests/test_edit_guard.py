"""One bad edit never ends a run: NaN/inf edits are discarded, out-of-memory edits are retried smaller, then skipped."""

from __future__ import annotations

from typing import List, Optional

import pytest
import torch

from igs2gs.edit_guard import EditGuard, RoundFaults, retry_sides
from igs2gs.editor import EditSettings
from igs2gs.errors import EditsFailingError, IGS2GSConfigError
from igs2gs.ip2p import IP2PLoadError


def out_of_memory() -> torch.OutOfMemoryError:
    return torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


class ScriptedEdits:
    """`edit_at(side)` for the guard: plays one action per call ("ok", "nan", "inf", "oom", "error", "load")."""

    def __init__(self, actions: List[str]) -> None:
        self.actions = list(actions)
        self.sides: List[int] = []

    def __call__(self, side: int) -> torch.Tensor:
        self.sides.append(side)
        action = self.actions.pop(0)
        image = torch.full((1, 3, side, side), 0.5)
        if action == "nan":
            image[0, 1, 2, 3] = float("nan")
        elif action == "inf":
            image[0, 0, 0, 0] = float("inf")
        elif action == "oom":
            raise out_of_memory()
        elif action == "error":
            raise RuntimeError("cuDNN error: CUDNN_STATUS_INTERNAL_ERROR")
        elif action == "load":
            raise IP2PLoadError("Could not load the InstructPix2Pix UNet config of 'timbrooks/instruct-pix2pix'")
        return image


def make_guard(**kwargs) -> tuple[EditGuard, List[str], List[int]]:
    lines: List[str] = []
    frees: List[int] = []
    guard = EditGuard(free_memory=lambda: frees.append(1), log=lines.append, **kwargs)
    return guard, lines, frees


def test_retry_sides_shrink_in_multiples_of_8_and_stop_at_the_floor():
    assert retry_sides(512) == [512, 384, 256]
    assert retry_sides(511) == [511, 376, 248]
    assert retry_sides(64) == [64, 48, 32]
    assert retry_sides(40) == [40, 32]  # nothing smaller than 32 px is tried
    assert retry_sides(32) == [32]


@pytest.mark.parametrize("bad", ["nan", "inf"])
def test_a_non_finite_edit_is_discarded_and_counted(bad):
    guard, lines, _ = make_guard()
    assert guard.run(7, ScriptedEdits([bad]), 512) is None and not guard.last_kept
    assert guard.faults.non_finite == [7] and guard.totals["non_finite"] == 1
    assert "view 7 has NaN/inf values: discarded" in lines[0]
    edit = guard.run(8, ScriptedEdits(["ok"]), 512)
    assert edit is not None and guard.last_kept


def test_out_of_memory_frees_memory_and_retries_smaller():
    guard, lines, frees = make_guard()
    edits = ScriptedEdits(["oom", "ok"])
    edit = guard.run(3, edits, 512)
    assert edit is not None and edit.shape[-1] == 384 and edits.sides == [512, 384]
    assert frees == [1] and guard.faults.retried_smaller == [3]
    assert "view 3 ran out of memory when edited at 512 px; retrying at 384 px" in lines[0]
    assert "--pipeline.edit-max-side" in lines[0]


def test_out_of_memory_at_every_size_skips_the_view():
    guard, lines, frees = make_guard()
    edits = ScriptedEdits(["oom", "oom", "oom"])
    assert guard.run(4, edits, 512) is None
    assert edits.sides == [512, 384, 256] and len(frees) == 3
    assert guard.faults.skipped == [4] and "view 4 ran out of memory even at 256 px: skipped" in lines[-1]


def test_one_failing_view_is_skipped_but_failures_view_after_view_stop_the_run():
    guard, lines, _ = make_guard(max_consecutive_failures=3)
    assert guard.run(0, ScriptedEdits(["error"]), 64) is None
    assert "the edit of view 0 failed (RuntimeError: cuDNN error" in lines[-1]
    assert guard.run(1, ScriptedEdits(["ok"]), 64) is not None  # a success resets the count
    guard.run(2, ScriptedEdits(["error"]), 64)
    guard.run(3, ScriptedEdits(["error"]), 64)
    with pytest.raises(EditsFailingError, match="the last 3 edits all failed, the latest \\(view 4\\)"):
        guard.run(4, ScriptedEdits(["error"]), 64)


def test_weights_that_cannot_load_stop_the_run_with_their_message():
    guard, _, _ = make_guard()
    with pytest.raises(IGS2GSConfigError) as raised:
        guard.run(0, ScriptedEdits(["load"]), 64)
    assert isinstance(raised.value, SystemExit)  # ns-train prints the message, no traceback
    assert "Could not load the InstructPix2Pix UNet config" in raised.value.message


def test_a_ctrl_c_is_not_swallowed():
    guard, _, _ = make_guard()

    def interrupted(side: int) -> torch.Tensor:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        guard.run(0, interrupted, 64)


def test_the_round_summary_names_the_views_and_resets():
    guard, _, _ = make_guard()
    guard.run(1, ScriptedEdits(["nan"]), 512)
    guard.run(2, ScriptedEdits(["oom", "ok"]), 512)
    guard.run(5, ScriptedEdits(["oom", "oom", "oom"]), 512)
    summary = guard.take_round_faults().summary()
    assert summary == (
        "1 edits discarded for NaN/inf (views 1); 2 retried smaller after running out of memory (views 2, 5); "
        "1 skipped (views 5); those views keep their previous image until the next round"
    )
    assert guard.take_round_faults().summary() is None
    assert RoundFaults().summary() is None


class FaultyEditor:
    """An `ImageEditor` that plays "nan", "oom" or "ok" (1 - originals) per call and records the sizes it saw."""

    def __init__(self, actions: List[str]) -> None:
        self.actions = list(actions)
        self.sizes: List[tuple] = []

    def edit(self, renders, originals, settings: EditSettings, generator: Optional[torch.Generator] = None):
        self.sizes.append(tuple(renders.shape[-2:]))
        action = self.actions.pop(0)
        if action == "oom":
            raise out_of_memory()
        edited = 1.0 - originals
        if action == "nan":
            edited[0, 0, 0, 0] = float("nan")
        return edited


def test_the_pipeline_keeps_the_previous_image_and_retries_smaller(splatfacto_run, tmp_path, random_lpips_backbones):
    from tests.test_resume import build_trainer

    pipeline = build_trainer(splatfacto_run, tmp_path, "faults", iterations=1).pipeline
    editor = FaultyEditor(["nan", "oom", "ok", "oom", "oom", "oom"])
    pipeline.build_editor = lambda: editor  # type: ignore[method-assign]  # the editor's first use builds it
    datamanager = pipeline.datamanager
    render = torch.rand(64, 64, 3)

    before = datamanager.cached_train[3]["image"].clone()
    kept = pipeline.edit_view(3, render, step=201)
    assert torch.equal(kept, before) and 3 not in datamanager.edited_views  # NaN edit discarded

    edited = pipeline.edit_view(4, render, step=202)  # out of memory at 64 px, then edited at 48 px
    assert editor.sizes[1:] == [(64, 64), (48, 48)] and 4 in datamanager.edited_views
    assert edited.shape == (64, 64, 3) and torch.isfinite(edited).all()

    before = datamanager.cached_train[5]["image"].clone()
    assert torch.equal(pipeline.edit_view(5, render, step=203), before)  # out of memory at 64, 48, 32 px: skipped
    assert editor.sizes[3:] == [(64, 64), (48, 48), (32, 32)]
    assert pipeline.edit_guard.faults == RoundFaults(non_finite=[3], retried_smaller=[4, 5], skipped=[5])
