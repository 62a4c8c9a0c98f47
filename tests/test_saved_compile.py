"""Compiled editor pieces saved whole (igs2gs/saved_compile.py), on the CPU with the tiny InstructPix2Pix."""

from __future__ import annotations

import dataclasses
import json
import pickle
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import torch

from igs2gs import saved_compile
from igs2gs.dynamo_compat import sources_pickle_their_init_fields, with_subclasses
from igs2gs.fast_group_norm import use_fast_group_norm
from igs2gs.saved_compile import SavedCompile, modules_digest
from tests.tiny_ip2p import tiny_editor

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not saved_compile.supported(), reason="this torch has no AOT compile of modules")


class EagerFallback:
    """Stands in for the `CompiledThenRunOnly` fallback: runs the method eagerly and counts its calls."""

    def __init__(self, method: Any) -> None:
        self.method, self.calls, self.compiling = method, 0, True

    def stop_compiling(self) -> None:
        self.compiling = False

    def __call__(self, *args: Any) -> Any:
        self.calls += 1
        return self.method(*args)


def step_args(editor: Any, views: int = 2, side: int = 8) -> tuple[Any, ...]:
    """Fixed inputs of the tiny editor's denoising step."""
    g = torch.Generator().manual_seed(1)
    return (
        torch.randn(views, 4, side, side, generator=g),
        torch.randn(3 * views, 4, side, side, generator=g),
        editor.encode_prompt("turn the bear into a panda").repeat_interleave(views, dim=0),
        torch.full((3 * views,), 500, dtype=torch.long),
        torch.tensor([7.5, 1.5]),
        torch.rand(4, views, generator=g),
        0.0,
    )


def saved_step(editor: Any, folder: Path) -> tuple[SavedCompile, EagerFallback]:
    fallback = EagerFallback(editor.denoise_step)
    return SavedCompile(editor.denoise_step, "step", folder, editor._compile_context(), fallback), fallback  # type: ignore[arg-type]


LOAD_IN_FRESH_PROCESS = """
import json, sys, torch
sys.path.insert(0, sys.argv[1])
from torch._dynamo.utils import counters
from tests.test_saved_compile import saved_step, step_args
from tests.tiny_ip2p import tiny_editor
editor = tiny_editor()
with torch.no_grad():
    for p in editor.unet.parameters():  # other weights than the saving process had: the graphs must read them live
        p.add_(0.05 * torch.randn_like(p))
    step, fallback = saved_step(editor, __import__("pathlib").Path(sys.argv[2]))
    args = step_args(editor)
    diff = (step(*args) - editor.denoise_step(*args)).abs().max().item()
print(json.dumps({"loaded": step.loaded, "graphs": counters["stats"]["unique_graphs"], "fallback_calls": fallback.calls,
                  "failures": step.failures, "diff": diff, "load_seconds": step.load_seconds,
                  "first_call_seconds": step.first_call_seconds}))
"""


@torch.no_grad()
def test_a_fresh_process_loads_the_saved_step_without_tracing(tmp_path: Path) -> None:
    editor = tiny_editor()
    step, fallback = saved_step(editor, tmp_path)
    args = step_args(editor)
    out = step(*args)
    assert step.failures == [] and len(step.saved) == 1 and fallback.calls == 0
    assert (tmp_path / step.saved[0]).stat().st_size > 0
    assert b"TENSOR_MATCH" not in (tmp_path / step.saved[0]).read_bytes(), "the piece was saved with dynamo's guards"
    torch.testing.assert_close(out, editor.denoise_step(*args), atol=1e-4, rtol=1e-4)

    done = subprocess.run(
        [sys.executable, "-c", LOAD_IN_FRESH_PROCESS, str(REPO), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    fresh = json.loads(done.stdout.strip().splitlines()[-1])
    assert fresh["loaded"] == step.saved and fresh["failures"] == []
    assert fresh["graphs"] == 0, "the fresh process traced the step again"
    assert fresh["fallback_calls"] == 0 and fresh["load_seconds"] > 0 and fresh["first_call_seconds"] > 0
    assert step.first_call_seconds == 0, "a piece compiled here is not a loaded piece's first call"
    assert fresh["diff"] < 1e-4, "the loaded step did not compute with the fresh process's weights"


@torch.no_grad()
def test_a_file_that_does_not_load_falls_back_and_is_reported(tmp_path: Path) -> None:
    editor = tiny_editor()
    step, fallback = saved_step(editor, tmp_path)
    args = step_args(editor)
    step.path(step.key(args)).write_bytes(b"not a compiled piece")
    step.stop_compiling()  # a load is still tried; compiling is not
    torch.testing.assert_close(step(*args), editor.denoise_step(*args))
    assert fallback.calls == 1 and step.loaded == [] and step.saved == []
    assert len(step.failures) == 1 and "could not load" in step.failures[0]


@torch.no_grad()
def test_after_stop_compiling_nothing_new_is_compiled(tmp_path: Path) -> None:
    editor = tiny_editor()
    step, fallback = saved_step(editor, tmp_path)
    step.stop_compiling()
    step(*step_args(editor))
    assert fallback.calls == 1 and step.saved == [] and list(tmp_path.iterdir()) == []


@torch.no_grad()
def test_without_the_api_the_fallback_runs_and_the_report_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(saved_compile, "supported", lambda: False)
    editor = tiny_editor()
    step, fallback = saved_step(editor, tmp_path)
    step(*step_args(editor))
    assert fallback.calls == 1 and step.saved == [] and step.failures == []
    editor._step = step
    assert "no AOT compile of modules" in editor.saved_compile_report()


def test_the_key_follows_inputs_modules_and_code_but_not_weight_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    editor = tiny_editor()
    step, _ = saved_step(editor, tmp_path)
    args = step_args(editor)
    key = step.key(args)
    assert step.key(step_args(editor)) == key
    assert step.key(step_args(editor, views=1)) != key  # another batch size
    assert step.key((*args[:-1], 1.0)) != key  # another constant
    assert step.key((args[0].to(memory_format=torch.channels_last), *args[1:])) != key  # other strides
    assert saved_compile.describe(torch.zeros(1, device="meta")) != saved_compile.describe(torch.zeros(1))

    with torch.no_grad():
        assert step.key(args) != key  # another global state (dynamo's global-state guard checked grad mode)

    context = editor._compile_context()
    editor.unet.register_to_config(norm_eps=1e-3)  # a setting that changes no tensor's layout
    assert editor._compile_context() != context
    editor.unet.register_to_config(_name_or_path="/another/folder")  # where the model was read from does not count
    editor.unet.register_to_config(norm_eps=1e-5)
    assert editor._compile_context() == context

    digest = modules_digest(editor.unet, editor.vae)
    with torch.no_grad():
        next(editor.unet.parameters()).add_(1.0)
    assert modules_digest(editor.unet, editor.vae) == digest  # values are read live, not keyed
    assert use_fast_group_norm(editor.vae) > 0
    assert modules_digest(editor.unet, editor.vae) != digest  # another GroupNorm class compiles other code

    fresh = tiny_editor()
    before = saved_step(fresh, tmp_path)[0].key(args)
    monkeypatch.setattr(saved_compile, "package_digest", lambda: "other code")
    assert saved_step(fresh, tmp_path)[0].key(args) != before  # other igs2gs source
    monkeypatch.setattr(saved_compile, "INDUCTOR_OPTIONS", {})
    assert saved_step(fresh, tmp_path)[0].key(args) != before  # other inductor settings


def test_pieces_compile_without_inductors_load_time_second_block_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loaded pieces would benchmark that config again in every process (torch 2.11, saved_compile.INDUCTOR_OPTIONS)."""
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(saved_compile.torch, "compile", lambda module, **kwargs: calls.append(kwargs) or module)
    step, _ = saved_step(tiny_editor(), tmp_path)
    step._compiled_module()
    assert calls and calls[0]["options"]["dynamic_scale_rblock"] is False
    assert calls[0]["options"]["guard_filter_fn"] is saved_compile.no_guards


SAVED_EDIT_IN_FRESH_PROCESS = """
import json, sys, torch
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from torch._dynamo.utils import counters
from tests.test_saved_compile import saved_compile_edit
out, report = saved_compile_edit(Path(sys.argv[2]), sys.argv[4])
torch.save(out.cpu(), sys.argv[3])
print(json.dumps({"graphs": counters["stats"]["unique_graphs"], "report": report}))
"""


def saved_compile_edit(cache: Path, device: str) -> tuple[torch.Tensor, str]:
    """The tiny editor with its compiled pieces kept whole in `cache`, and one 2-view edit of fixed inputs. On CUDA
    through `enable_compile` as a run sets it up; on the CPU (where enable_compile refuses) piece by piece."""
    from igs2gs.editor import EditSettings

    editor = tiny_editor(device=device)
    if device == "cuda":
        editor.enable_fast_kernels(channels_last=True, group_norm=False)  # as configure_editor does with ip2p_compile
        editor.enable_compile(cache_dir=cache, saved=True)
    else:
        compile_piece_by_piece(editor, cache)
    out = fixed_edit(editor, EditSettings(prompt="turn it blue", diffusion_steps=3))
    editor.stop_compiling()
    return out, editor.saved_compile_report() or ""


def compile_piece_by_piece(editor: Any, cache: Path) -> None:
    """On the CPU, where `enable_compile` refuses: the tiny editor's three pieces kept whole in `cache`."""
    folder, context = cache / saved_compile.FOLDER, editor._compile_context()
    editor._step = editor._compiled(editor.denoise_step, "step", False, folder, context)
    editor._encode = editor._compiled(editor._vae_encode, "vae_encode", False, folder, context)
    editor._decode = editor._compiled(editor._vae_decode, "vae_decode", False, folder, context)


@torch.no_grad()
def fixed_edit(editor: Any, settings: Any) -> torch.Tensor:
    """One 2-view edit of fixed 64 x 64 inputs."""
    g = torch.Generator().manual_seed(0)
    renders, originals = (torch.rand(2, 3, 64, 64, generator=g).to(editor.device) for _ in range(2))
    generators = [torch.Generator().manual_seed(seed) for seed in (1, 2)]
    return editor.edit(renders, originals, settings, generator=generators)


def test_a_recorded_plan_skips_the_warm_up_and_its_pieces_load_in_the_first_edit_on_another_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from igs2gs import editor_warm_up
    from igs2gs.editor import EditSettings

    logged: list[str] = []
    monkeypatch.setattr(editor_warm_up, "_log", logged.append)
    settings, plan = EditSettings(prompt="turn it blue", diffusion_steps=3), ([(64, 64)], 2)
    first = tiny_editor()
    compile_piece_by_piece(first, tmp_path)
    assert not first.saved_plan_ready(*plan)
    assert not editor_warm_up.warm_up_editor(first, *plan, settings, "cpu", defer_saved=True)  # nothing saved yet
    assert not first.compiling and first.saved_plan_ready(*plan)
    assert not first.saved_plan_ready([(32, 32)], 2) and not first.saved_plan_ready([(64, 64)], 1)

    later = tiny_editor()
    compile_piece_by_piece(later, tmp_path)
    assert editor_warm_up.warm_up_editor(later, *plan, settings, "cpu", defer_saved=True)
    pieces = later._saved_pieces()
    assert not later.compiling and [p.loaded for p in pieces] == [[], [], []], "a piece loaded before the first edit"
    edits: list[torch.Tensor] = []
    worker = threading.Thread(target=lambda: edits.append(fixed_edit(later, settings)))
    worker.start()
    worker.join()
    assert [len(p.loaded) for p in pieces] == [1, 1, 1] and [p.fallback_keys for p in pieces] == [[], [], []]
    assert saved_counts(logged[-1]) == (3, 0), logged  # reported once the first edit returned
    torch.testing.assert_close(edits[0], fixed_edit(tiny_editor(), settings), atol=2e-3, rtol=0)

    (pieces[0].folder / pieces[0].loaded[0]).unlink()
    assert not later.saved_plan_ready(*plan), "a record whose files are gone counts as not saved"


def test_a_plan_whose_pieces_fell_back_is_not_recorded(tmp_path: Path) -> None:
    editor = tiny_editor()
    step, fallback = saved_step(editor, tmp_path)
    step.stop_compiling()  # nothing saved: the call falls back
    step(*step_args(editor))
    assert fallback.calls == 1 and step.fallback_keys == [step.key(step_args(editor))]
    assert not saved_compile.record_plan([step], "plan") and not saved_compile.plan_is_saved([step], "plan")


def saved_counts(report: str) -> tuple[int, int]:
    """(loaded, compiled and saved) from `saved_compile_report`'s first line."""
    found = re.search(
        r"(\d+) loaded \([\d.]+ s to read, [\d.]+ s in their first calls\), (\d+) compiled and saved", report
    )
    assert found, report
    return int(found.group(1)), int(found.group(2))


def check_saved_edit_loads_in_fresh_process(tmp_path: Path, device: str) -> None:
    """An edit compiles and saves the editor's pieces; a fresh process loads them all, traces nothing, and edits
    the same."""
    out, report = saved_compile_edit(tmp_path / "cache", device)
    loaded, saved = saved_counts(report)
    assert loaded == 0 and saved >= 3, report  # the step, the VAE encoder and decoder
    command = [sys.executable, "-c", SAVED_EDIT_IN_FRESH_PROCESS, str(REPO), str(tmp_path / "cache")]
    done = subprocess.run(command + [str(tmp_path / "o.pt"), device], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    fresh = json.loads(done.stdout.strip().splitlines()[-1])
    assert saved_counts(fresh["report"]) == (saved, 0), fresh["report"]
    assert fresh["graphs"] == 0, "the fresh process traced the editor again"
    torch.testing.assert_close(torch.load(tmp_path / "o.pt"), out.cpu(), atol=2e-3, rtol=0)


def test_an_edit_with_saved_pieces_loads_in_a_fresh_process_on_the_cpu(tmp_path: Path) -> None:
    check_saved_edit_loads_in_fresh_process(tmp_path, "cpu")


def pickle_sources_with_every_field(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make guard sources pickle as torch 2.11 does: every dataclass field, `init=False` ones too."""
    from torch._guards import Source

    def reduce_with_every_field(source: Any) -> tuple[type, tuple[Any, ...]]:
        return type(source), tuple(getattr(source, f.name) for f in dataclasses.fields(source))

    for cls in with_subclasses(Source):
        if "__reduce__" in vars(cls):
            monkeypatch.setattr(cls, "__reduce__", reduce_with_every_field)


def test_sources_with_computed_fields_pickle_under_torch_2_11s_reduce(monkeypatch: pytest.MonkeyPatch) -> None:
    from torch._dynamo.source import DefaultsSource, GlobalSource

    source = DefaultsSource(GlobalSource("f"), 0)
    pickle_sources_with_every_field(monkeypatch)
    with pytest.raises(TypeError, match="positional arguments"):
        pickle.loads(pickle.dumps(source))  # what the lent GPUs' torch 2.11 did
    with sources_pickle_their_init_fields():
        again = pickle.loads(pickle.dumps(source))
    assert again == source and again.name == source.name
    with pytest.raises(TypeError, match="positional arguments"):
        pickle.loads(pickle.dumps(source))  # the replaced reduce is back afterwards


@torch.no_grad()
def test_a_piece_saved_under_torch_2_11s_reduce_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pickle_sources_with_every_field(monkeypatch)
    editor = tiny_editor()
    step, _ = saved_step(editor, tmp_path)
    args = step_args(editor)
    step(*args)
    assert step.failures == [] and len(step.saved) == 1

    again, fallback = saved_step(editor, tmp_path)
    torch.testing.assert_close(again(*args), editor.denoise_step(*args), atol=1e-4, rtol=1e-4)
    assert again.failures == [] and again.loaded == step.saved and fallback.calls == 0


def test_the_compile_cache_folder_wins_over_the_default_that_importing_dynamo_sets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch._dynamo  # noqa: F401 - sets TORCHINDUCTOR_CACHE_DIR to inductor's default in the environment
    import torch._inductor.config as inductor_config
    from torch._inductor.runtime.cache_dir_utils import cache_dir, default_cache_dir

    from igs2gs.ip2p_speed import use_compile_cache

    # torch's own patch restores the flag that use_compile_cache sets (monkeypatch's undo would hide it)
    with inductor_config.patch(fx_graph_cache=inductor_config.fx_graph_cache):
        monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", default_cache_dir())
        assert use_compile_cache(tmp_path / "ours") == tmp_path / "ours"
        assert cache_dir() == str(tmp_path / "ours"), "inductor does not use the folder"
        monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "the user's"))
        assert use_compile_cache(tmp_path / "ours") == tmp_path / "the user's"
