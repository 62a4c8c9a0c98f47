"""The default igs2gs edit of bear end to end on one GPU: the original's configuration against ours.

1. `ns-train splatfacto` on bear for --splatfacto-steps steps, in this run; its checkpoint is relabelled as
   step 29,999 so that igs2gs continues as from a fully trained scene (benchmarks/e2e_common.py).
2. Each configuration runs in its own process, as ns-train would, with the default igs2gs config (7,500 steps,
   3 rounds of every training view, vis viewer) and a random-weight InstructPix2Pix of the real architecture:
   - `ours`: the defaults; the whole run is timed (compilation included, cold unless the cache has it). On a GPU
     the defaults edit in the background on the training GPU (`overlap_edits`).
   - `ours-sync`: ours with `overlap_edits False`: training stops for each edit batch.
   - `ours-priority`: ours with `training_stream_priority True`: training on a highest-priority stream.
   - `ours-conn32`: ours with CUDA_DEVICE_MAX_CONNECTIONS=32 (CUDA's default is 8 hardware work queues).
   - `ours-process`, `ours-process-compile`: ours (and compiled, with the compiled editor's hand-over) with the
     editor in a process of its own on the training GPU (an experiment).
   - `original`: the original's configuration (model CPU offload, attention slicing, one view per edit,
     condition encoded every edit, nerfstudio's plain training step). Its ~13-minute run does not fit a
     lease, so a slice is timed (--original-edits edits of the first round, then --original-plain plain
     steps) and the default run is extrapolated: start-up + model load + 261 edit steps + 7,239 plain steps.
   - `ours-2gpu`: ours with InstructPix2Pix on a second GPU (`ip2p_device cuda:1`), in a process of its own
     (igs2gs/edit_process.py): rounds edit in the background while training goes on; timed as for `ours`.
     (RESULTS.md's earlier `ours-2gpu-process` runs are this one; its earlier `ours-2gpu` runs used the thread.)
   - `ours-2gpu-thread`, `ours-2gpu-thread-compile`: ours-2gpu (and compiled) with `ip2p_process False`: the
     editor on a thread of the training process.
   - `ours-compile`, `ours-2gpu-compile`: ours and ours-2gpu with `ip2p_compile True` and torch.compile alone
     (`ip2p_compile_saved False`); `NAME-again` runs NAME's options once more, with the compile cache the first run
     filled (a user's second run of that image size); `NAME-again-again` once more.
   - `ours-compile-saved`, `ours-2gpu-compile-saved`: `ip2p_compile True` as it comes (compiled pieces kept whole,
     igs2gs/saved_compile.py): their `-again` runs load them instead of tracing.
   - `ours-2gpu-helper`, `ours-2gpu-compile-saved-helper`: those two-GPU runs with `ip2p_helper True`: while
     training waits for a round, an uncompiled InstructPix2Pix on the training GPU edits the batches it would finish
     no later than the second GPU.
   - `ours-2gpu-compile-saved-helper-fork`, `...-spawn`: the last with torch.cuda.is_available() answered through
     NVML (`NVML_CHECK`), so that the edit processes can be forked (igs2gs/process_start.py); `-spawn` spawns them
     all the same (`IGS2GS_START_METHOD=spawn`).
   - `ours-process`, `ours-process-compile`, `ours-process-compile-saved`: one GPU, with the edit process
     (igs2gs/edit_process.py) on the training GPU (`one_gpu_edit_process`, an experiment, not an option).
   - `ours-1024`: ours on bear upscaled to 1024 px (one round + 20 steps, compile off): peak memory.
   - `NAME-spy`: run NAME (e.g. `ours-again-spy`) under py-spy (--py-spy BINARY), every process and thread of it
     sampled 100 times a second with idle time, into PROFILE_DIR/pyspy_NAME-spy.txt (raw stacks; py-spy does not
     pause the processes it samples). Without --py-spy the name runs NAME as it is.

    python benchmarks/bench_e2e.py --data DATA/bear --ip2p-model IP2P_DIR --out OUT [--runs ours,original]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

STARTED = time.perf_counter()

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.e2e_common import (  # noqa: E402
    Timings,
    child_result,
    igs2gs_trainer,
    make_checkpoint,
    nerfstudio_training_step,
    run_children,
    timed_train,
    upscaled_scene,
    write_child_record,
)

DEFAULT_STEPS, ROUNDS = 7500, 3

ORIGINAL = {
    "ip2p_memory_savers": True,
    "edit_batch_size": 1,
    "ip2p_compile": False,
    "ip2p_fast_kernels": False,
    "overlap_edits": False,
    "model": {"fused_adam": False, "lpips_cuda_graphs": False},
}
"""Pipeline options that give the original's InstructPix2Pix placement and one view per edit."""

OURS_RUNS: dict[str, dict[str, Any]] = {
    "ours": {},  # the defaults
    "ours-sync": {"overlap_edits": False},  # training waits for each edit batch
    "ours-priority": {"training_stream_priority": True},  # background edits, training on a high-priority stream
    "ours-2gpu": {"ip2p_device": "cuda:1"},  # InstructPix2Pix on the second GPU (issue 6), in a process of its own
    "ours-2gpu-thread": {"ip2p_device": "cuda:1", "ip2p_process": False},  # ... on a thread of the training process
    # compiled InstructPix2Pix, torch.compile alone (compiled while the trainer starts up)
    "ours-compile": {"ip2p_compile": True, "ip2p_compile_saved": False},
    "ours-2gpu-compile": {"ip2p_device": "cuda:1", "ip2p_compile": True, "ip2p_compile_saved": False},
    "ours-compile-saved": {"ip2p_compile": True, "ip2p_compile_saved": True},  # ... kept whole: no tracing later
    "ours-2gpu-compile-saved": {"ip2p_device": "cuda:1", "ip2p_compile": True, "ip2p_compile_saved": True},
    # ... with a helper editor on the training GPU (igs2gs/edit_lanes.py)
    "ours-2gpu-helper": {"ip2p_device": "cuda:1", "ip2p_helper": True},
    "ours-2gpu-compile-saved-helper": {
        "ip2p_device": "cuda:1",
        "ip2p_compile": True,
        "ip2p_compile_saved": True,
        "ip2p_helper": True,
    },
    "ours-2gpu-thread-compile": {
        "ip2p_device": "cuda:1",
        "ip2p_process": False,
        "ip2p_compile": True,
        "ip2p_compile_saved": False,
    },
}
"""The whole default run with these pipeline options. A name ending in "-again" runs the options of the name
without it once more: after a compiled run, with the compile cache that run filled."""
OURS_RUNS["ours-conn32"] = OURS_RUNS["ours"]
OURS_RUNS["ours-process"] = OURS_RUNS["ours"]  # one GPU, the editor in a process of its own (`one_gpu_edit_process`)
OURS_RUNS["ours-process-compile"] = OURS_RUNS["ours-compile"]  # ... with the compiled editor's hand-over
OURS_RUNS["ours-process-compile-saved"] = OURS_RUNS["ours-compile-saved"]  # ... which loads saved pieces later
for _how in ("fork", "spawn"):  # ... with the edit processes forked or spawned (igs2gs/process_start.py)
    OURS_RUNS[f"ours-2gpu-compile-saved-helper-{_how}"] = OURS_RUNS["ours-2gpu-compile-saved-helper"]
NVML_CHECK = {"PYTORCH_NVML_BASED_CUDA_CHECK": "1"}
"""torch.cuda.is_available() through NVML: torch 2.11's inductor asks it at its import (which nerfstudio's splatfacto
brings in before igs2gs runs), and its CUDA answer initialises the driver, so that the edit processes cannot be
forked; torch 2.14's inductor does not ask at its import."""
RUN_ENVIRONMENT: dict[str, dict[str, str]] = {
    # 32 hardware work queues instead of CUDA's 8: whether training's kernels queue behind the editor's on one GPU
    "ours-conn32": {"CUDA_DEVICE_MAX_CONNECTIONS": "32"},
    "ours-2gpu-compile-saved-helper-fork": NVML_CHECK,
    "ours-2gpu-compile-saved-helper-spawn": {**NVML_CHECK, "IGS2GS_START_METHOD": "spawn"},
}
"""Environment variables of a run's process, set before CUDA starts."""


def child(args: argparse.Namespace) -> None:
    import torch

    name, out = args.child, Path("/tmp/igs2gs-bench") / args.child
    options = name.removesuffix("-spy")
    while options.endswith("-again"):  # NAME-again-again: a further run of NAME's options
        options = options.removesuffix("-again")
    os.environ.update(RUN_ENVIRONMENT.get(options, {}))
    if options.startswith("ours-process"):
        one_gpu_edit_process()
    if options in OURS_RUNS:
        with startup_profile(name if name in args.profile_startup.split(",") else None, args.profile_dir):
            trainer = igs2gs_trainer(args.data, args.load_dir, out, args.ip2p_model, **OURS_RUNS[options])
        timings, setup_s = Timings(trainer), time.perf_counter() - STARTED
        if name in args.profile_round.split(","):
            profile_round_steps(trainer, args.profile_round_steps, args.profile_dir, name)
        if name in args.sample_round.split(","):
            sample_round_steps(trainer, args.sample_round_steps, args.profile_dir, name)
        train_s = timed_train(trainer, args.ours_steps)
        if name == "ours" and args.profile_steps:
            profile_plain_steps(trainer, args.profile_steps)
    elif name == "original":
        trainer = igs2gs_trainer(args.data, args.load_dir, out, args.ip2p_model, **ORIGINAL)
        timings, setup_s = Timings(trainer), time.perf_counter() - STARTED
        with nerfstudio_training_step(trainer):
            train_s = timed_train(trainer, args.original_edits)
            rnd = trainer.pipeline.edit_round
            rnd.active, rnd.cursor = False, 0  # the slice's round ends here; plain steps follow
            trainer._start_step = trainer.step + 1
            train_s += timed_train(trainer, args.original_plain)
    elif name == "ours-1024":
        data = upscaled_scene(args.data, Path("/tmp/igs2gs-bench/bear-1024"))
        trainer = igs2gs_trainer(data, args.load_dir, out, args.ip2p_model, ip2p_compile=False)
        timings, setup_s = Timings(trainer), time.perf_counter() - STARTED
        train_s = timed_train(trainer, trainer.pipeline.datamanager.num_train_views + 20)
        image = trainer.pipeline.datamanager.cached_train[0]["image"]
        setup_s_note = {"image_size": list(image.shape[:2])}
    else:
        raise SystemExit(f"unknown run {name!r}")
    extra: dict[str, Any] = {"setup_s": setup_s}
    if name == "ours-1024":
        extra.update(setup_s_note)
    write_child_record(name, child_result(name, trainer, timings, STARTED, train_s, **extra))
    del torch


def one_gpu_edit_process() -> None:
    """An experiment, not an option: the pipeline treats the training GPU as the editor's own device, so the edit
    process (edit_process.py) runs InstructPix2Pix in a second CUDA context on the training GPU. The two threads stop
    sharing one interpreter; the GPU then switches between the two processes' work instead of running their kernels
    side by side."""
    import igs2gs.igs2gs_pipeline as pipeline_module

    pipeline_module.edits_on_own_device = lambda training, editing: True


@contextlib.contextmanager
def startup_profile(name: Optional[str], folder: Path) -> Iterator[None]:
    """cProfile over the trainer's set-up (imports included) of run `name` (None: not profiled), written to
    `folder`/startup_NAME.txt as soon as the set-up ends: where the time before the first training step goes."""
    if name is None:
        yield
        return
    import cProfile

    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    try:
        yield
    finally:
        profiler.disable()
        title = f"set-up of {name}: {time.perf_counter() - started:.1f} s under cProfile"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"startup_{name}.txt").write_text(cprofile_text(profiler, title, cumulative_rows=90, tottime_rows=30))


def cprofile_text(profiler: Any, title: str, cumulative_rows: int, tottime_rows: int) -> str:
    """`title`, then a cProfile's functions by cumulative time and by own time."""
    import io
    import pstats

    stream = io.StringIO()
    stream.write(f"{title}\n")
    pstats.Stats(profiler, stream=stream).sort_stats("cumulative").print_stats(cumulative_rows)
    pstats.Stats(profiler, stream=stream).sort_stats("tottime").print_stats(tottime_rows)
    return stream.getvalue()


def profile_plain_steps(trainer: Any, steps: int) -> None:
    """After the run: torch.profiler over `steps` plain steps, and cProfile over 3x as many (text files)."""
    import cProfile

    from torch.profiler import ProfilerActivity, profile

    trainer.pipeline.config.gs_steps = 10**9  # no further round
    trainer._after_train = lambda: None
    trainer._init_viewer_state = lambda: None
    trainer._start_step = trainer.step + 1
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        seconds = timed_train(trainer, steps)
    averages = prof.key_averages()
    kernel_ms = sum(e.self_device_time_total for e in averages if e.device_type.name == "CUDA") / 1000 / steps
    text = f"{steps} plain steps under torch.profiler: {1000 * seconds / steps:.2f} ms/step, "
    text += f"GPU kernels {kernel_ms:.2f} ms/step\n"
    text += averages.table(sort_by="self_cpu_time_total", row_limit=35)
    text += averages.table(sort_by="self_device_time_total", row_limit=15)
    trainer._start_step = trainer.step + 1
    profiler = cProfile.Profile()
    profiler.enable()
    seconds = timed_train(trainer, 3 * steps)
    profiler.disable()
    title = f"\n{3 * steps} plain steps under cProfile: {1000 * seconds / (3 * steps):.2f} ms/step"
    text += cprofile_text(profiler, title, cumulative_rows=40, tottime_rows=25)
    Path("/tmp/igs2gs-bench/profile.txt").write_text(text)


ROUND_PROFILE_WINDOWS = {"round2": (1, 300), "before-round3": (2, -200)}
"""Where `profile_round_steps` profiles: (rounds, steps) from the run's first step. "round2": round 2's first edits
are under way; "before-round3": round 2's edits are done in a run whose editor keeps ahead, so only training runs."""
WindowCall = Callable[[str, int], None]
_CUDA_CALLS = {
    "launch": ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx", "cudaGraphLaunch"),
    "sync": ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaStreamWaitEvent"),
    "copy": ("cudaMemcpyAsync", "cudaMemcpy"),
}


def at_round_windows(trainer: Any, steps: int, begin: WindowCall, end: WindowCall) -> None:
    """Call `begin(label, first_step)` at the first step of each of `ROUND_PROFILE_WINDOWS` and `end(label,
    first_step)` `steps` steps later (training callbacks of the run)."""
    from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackLocation

    gs_steps = trainer.pipeline.config.gs_steps
    starts = {
        label: trainer._start_step + rounds * gs_steps + offset
        for label, (rounds, offset) in ROUND_PROFILE_WINDOWS.items()
    }

    def at_step(step: int) -> None:
        for label, first in starts.items():
            if step == first:
                begin(label, first)
            elif step == first + steps:
                end(label, first)

    trainer.callbacks.append(TrainingCallback([TrainingCallbackLocation.BEFORE_TRAIN_ITERATION], at_step))


def profile_round_steps(trainer: Any, steps: int, folder: Path, name: str) -> None:
    """During the run: torch.profiler over `steps` training steps at each of `ROUND_PROFILE_WINDOWS`, written to
    `folder`/profile_round_NAME_WINDOW.txt (per thread: CUDA launch, synchronisation and copy calls; the busiest
    ops) with a Chrome trace beside it. Where a step's time goes while the editor works, and while it is idle."""
    from torch.profiler import ProfilerActivity, profile

    state: dict[str, Any] = {}

    def begin(label: str, first: int) -> None:
        state["profiler"] = profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA])
        state["profiler"].__enter__()
        state["editing"], state["started"] = trainer.pipeline.edit_round.active, time.perf_counter()

    def end(label: str, first: int) -> None:
        if "profiler" in state:
            write_round_profile(state, steps, folder, f"{name}_{label}", first)

    at_round_windows(trainer, steps, begin, end)


def sample_round_steps(trainer: Any, steps: int, folder: Path, name: str) -> None:
    """During the run: the training thread's Python stacks sampled (benchmarks/stack_sampler.py) over `steps` steps
    at each of `ROUND_PROFILE_WINDOWS`, written to `folder`/sample_round_NAME_WINDOW.txt: the time between torch's
    ops that torch.profiler does not show."""
    from benchmarks.stack_sampler import StackSampler

    state: dict[str, Any] = {}

    def begin(label: str, first: int) -> None:
        state["editing"] = trainer.pipeline.edit_round.active
        state["sampler"] = StackSampler().start()

    def end(label: str, first: int) -> None:
        sampler = state.pop("sampler", None)
        if sampler is None:
            return
        sampler.stop()
        title = f"{name}_{label}: {steps} steps from step {first}, {1000 * sampler.seconds / steps:.2f} ms/step; "
        title += f"a round was editing at the first: {state['editing']}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"sample_round_{name}_{label}.txt").write_text(sampler.report(title))

    at_round_windows(trainer, steps, begin, end)


def write_round_profile(state: dict[str, Any], steps: int, folder: Path, tag: str, first: int) -> None:
    """Stop the profiler in `state` and write its report and Chrome trace (see `profile_round_steps`)."""
    import gzip
    import shutil

    seconds = time.perf_counter() - state["started"]
    profiler = state.pop("profiler")
    profiler.__exit__(None, None, None)
    text = f"{tag}: {steps} steps from step {first} under torch.profiler, {1000 * seconds / steps:.2f} ms/step; "
    text += f"a round was editing at the first: {state['editing']}\n"
    text += per_thread_cuda_calls(profiler.events(), steps)
    averages = profiler.key_averages()
    text += averages.table(sort_by="self_cpu_time_total", row_limit=40)
    text += averages.table(sort_by="self_device_time_total", row_limit=25)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"profile_round_{tag}.txt").write_text(text)
    trace = Path(f"/tmp/igs2gs-traces/trace_round_{tag}.json")
    trace.parent.mkdir(parents=True, exist_ok=True)
    profiler.export_chrome_trace(str(trace))
    with trace.open("rb") as raw, gzip.open(folder / f"trace_round_{tag}.json.gz", "wb") as packed:
        shutil.copyfileobj(raw, packed)


def per_thread_cuda_calls(events: Any, steps: int) -> str:
    """A line per thread: ms per step in its CUDA launch, synchronisation and copy calls, and in all its ops."""
    threads: dict[int, dict[str, float]] = {}
    for event in events:
        if event.device_type.name != "CPU":
            continue
        totals = threads.setdefault(event.thread, {"all": 0.0, "launch": 0.0, "sync": 0.0, "copy": 0.0, "calls": 0})
        totals["all"] += event.self_cpu_time_total
        totals["calls"] += 1
        for kind, names in _CUDA_CALLS.items():
            if event.name in names:
                totals[kind] += event.self_cpu_time_total
    lines = ["thread: ms per step in launches / synchronisations / copies / all ops (self CPU), events per step"]
    for thread, totals in sorted(threads.items(), key=lambda item: -item[1]["all"]):
        ms = {kind: totals[kind] / 1000 / steps for kind in ("launch", "sync", "copy", "all")}
        lines.append(
            f"  {thread}: {ms['launch']:.2f} / {ms['sync']:.2f} / {ms['copy']:.2f} / {ms['all']:.2f}, "
            f"{totals['calls'] / steps:.0f}"
        )
    return "\n".join(lines) + "\n"


def extrapolate(record: dict, steps: int = DEFAULT_STEPS, rounds: int = ROUNDS) -> Optional[dict]:
    """The default run's wall time from a slice: start-up + first-edit overhead + edit steps + plain steps."""
    if record.get("failed") or not record.get("edit_calls"):
        return None
    views = record["train_views"]
    n_edit_steps = record["edit_calls"]  # edit_view runs at every step of a round
    later_edit_steps = (record["edit_step_s_total"] - record["first_edit_step_s"]) / max(1, n_edit_steps - 1)
    edit_steps = rounds * views
    total = (
        record["process_to_train_start_s"]
        + record["first_edit_step_s"]
        + (edit_steps - 1) * later_edit_steps
        + (steps - edit_steps) * record["plain_step_ms_mean"] / 1000
    )
    return {
        "edit_step_s_mean_after_first": later_edit_steps,
        "edit_s": record["first_edit_step_s"] + (edit_steps - 1) * later_edit_steps,
        "plain_s": (steps - edit_steps) * record["plain_step_ms_mean"] / 1000,
        "total_s": total,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--ip2p-model", required=True)
    parser.add_argument("--out", type=Path, default=Path("/tmp/igs2gs-bench/out"))
    parser.add_argument("--runs", default="ours,original")
    parser.add_argument("--load-dir", type=Path, help="a relabelled checkpoint folder (default: made here)")
    parser.add_argument("--splatfacto-steps", type=int, default=2000)
    parser.add_argument("--ours-steps", type=int, help="shorten ours (default: the config's 7,500)")
    parser.add_argument("--original-edits", type=int, default=10)
    parser.add_argument("--original-plain", type=int, default=300)
    parser.add_argument("--profile-steps", type=int, default=30, help="profile plain steps after ours (0: no)")
    parser.add_argument("--profile-startup", default="", help="runs whose set-up runs under cProfile (comma list)")
    parser.add_argument("--profile-round", default="", help="runs profiled during round 2's edits (comma list)")
    parser.add_argument("--profile-round-steps", type=int, default=40, help="steps that profile covers")
    parser.add_argument("--sample-round", default="", help="runs whose training thread is sampled in round 2 (list)")
    parser.add_argument("--sample-round-steps", type=int, default=300, help="steps that sampling covers")
    parser.add_argument("--profile-dir", type=Path, default=Path("/tmp/igs2gs-bench"), help="where those go")
    parser.add_argument("--py-spy", help="py-spy's binary: runs named NAME-spy run under it (see above)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    args.out.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {}
    if args.load_dir is None:
        args.load_dir, record["splatfacto_s"] = make_checkpoint(
            args.data, Path("/tmp/igs2gs-bench/ckpt"), args.splatfacto_steps, args.out / "splatfacto.log"
        )
    passthrough = ["--data", str(args.data), "--ip2p-model", args.ip2p_model, "--load-dir", str(args.load_dir)]
    passthrough += ["--original-edits", str(args.original_edits), "--original-plain", str(args.original_plain)]
    passthrough += ["--profile-steps", str(args.profile_steps), "--profile-startup", args.profile_startup]
    passthrough += ["--profile-round", args.profile_round, "--profile-round-steps", str(args.profile_round_steps)]
    passthrough += ["--sample-round", args.sample_round, "--sample-round-steps", str(args.sample_round_steps)]
    passthrough += ["--profile-dir", str(args.profile_dir)]
    if args.ours_steps:
        passthrough += ["--ours-steps", str(args.ours_steps)]
    record["runs"] = run_children(
        Path(__file__), args.runs.split(","), passthrough, args.out, prefix=py_spy_prefix(args.py_spy, args.profile_dir)
    )
    for run in record["runs"].values():
        run["extrapolated_default_run"] = extrapolate(run)
    (args.out / "bench_e2e.json").write_text(json.dumps(record, indent=2, default=str))
    print_table(record)


def py_spy_prefix(binary: Optional[str], folder: Path) -> Callable[[str], list[str]]:
    """The command that runs a child under py-spy when its name ends in "-spy" and `binary` is given."""

    def prefix(name: str) -> list[str]:
        if binary is None or not name.endswith("-spy"):
            return []
        folder.mkdir(parents=True, exist_ok=True)
        out = folder / f"pyspy_{name}.txt"
        return [binary, "record", "--idle", "--nonblocking", "--subprocesses", "--threads", "--rate", "100"] + [
            "--format", "raw", "-o", str(out), "--"
        ]  # fmt: skip

    return prefix


def print_table(record: dict) -> None:
    print(f"\n{'run':10s} {'wall s':>7s} {'setup s':>7s} {'edit s':>7s} {'1st edit':>8s} {'plain ms':>8s} "
          f"{'peak GiB':>8s} {'default run s (extrap.)':>24s}")  # fmt: skip
    for name, r in record["runs"].items():
        if r.get("failed"):
            print(f"{name:10s} failed")
            continue
        ex = r.get("extrapolated_default_run") or {}
        print(f"{name:10s} {r['wall_s']:7.1f} {r['process_to_train_start_s']:7.1f} {r['edit_s_total']:7.1f} "
              f"{r['first_edit_s'] or 0:8.1f} {r['plain_step_ms_mean'] or 0:8.2f} {r['peak_gpu_allocated_gib']:8.2f} "
              f"{ex.get('total_s', 0):24.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
