"""Helpers of the end-to-end GPU benchmarks (bench_e2e.py, bench_consistency.py): a splatfacto checkpoint made
in the same run, an in-process igs2gs run with its time split into editing and training, scene variants.

A run is one child process (`python benchmarks/<bench>.py --child NAME ...`), so each starts as `ns-train` would:
fresh CUDA context, nothing compiled in memory (the on-disk compile cache is whatever earlier runs left).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from statistics import mean, median
from typing import Any, Callable, Iterator, Optional

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

TRAINED_STEP = 29_999
"""The step the short splatfacto checkpoint is relabelled to: igs2gs then continues as from a fully trained 30k
checkpoint (outside splatfacto's densification window, rounds at 30,001, 32,501, 35,001)."""


def sync() -> None:
    """Wait for the GPU (a no-op on a CPU-only machine, where these scripts can be smoke-tested)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def ns_bin(name: str) -> str:
    return shutil.which(name) or str(Path(sys.executable).parent / name)


def run_logged(args: list[str], log: Path, env: Optional[dict] = None) -> float:
    """Run a command, write its output to `log`, raise on failure; return wall seconds."""
    started = time.perf_counter()
    with log.open("w") as out:
        result = subprocess.run(args, stdout=out, stderr=subprocess.STDOUT, env=env or os.environ.copy())
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        print(log.read_text()[-6000:], flush=True)
        raise SystemExit(f"{' '.join(args[:3])} failed with exit code {result.returncode} (log: {log})")
    return seconds


def make_checkpoint(data: Path, work: Path, steps: int, log: Path) -> tuple[Path, float]:
    """`ns-train splatfacto` for `steps` steps, its last checkpoint relabelled as step TRAINED_STEP.

    Returns the folder to pass as --load-dir and the splatfacto wall time."""
    seconds = run_logged(
        [ns_bin("ns-train"), "splatfacto", "--data", str(data), "--output-dir", str(work / "splatfacto"),
         "--max-num-iterations", str(steps), "--vis", "tensorboard", "--viewer.quit-on-train-completion", "True",
         "--steps-per-save", str(steps)],
        log,
    )  # fmt: skip
    ckpt = sorted((work / "splatfacto").rglob("step-*.ckpt"), key=lambda p: p.stat().st_mtime)[-1]
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    state["step"] = TRAINED_STEP
    load_dir = work / "trained" / "nerfstudio_models"
    load_dir.mkdir(parents=True, exist_ok=True)
    torch.save(state, load_dir / f"step-{TRAINED_STEP:09d}.ckpt")
    return load_dir, seconds


def upscaled_scene(data: Path, out: Path, factor: int = 2) -> Path:
    """A copy of a nerfstudio scene with images and intrinsics scaled by `factor` (the same poses)."""
    from PIL import Image

    if (out / "transforms.json").exists():
        return out
    transforms = json.loads((data / "transforms.json").read_text())
    for key in ("w", "h", "fl_x", "fl_y", "cx", "cy"):
        if key in transforms:
            transforms[key] = transforms[key] * factor
    (out / "images").mkdir(parents=True, exist_ok=True)
    for frame in transforms["frames"]:
        for key in ("w", "h", "fl_x", "fl_y", "cx", "cy"):
            if key in frame:
                frame[key] = frame[key] * factor
        with Image.open(data / frame["file_path"]) as image:
            image.resize((image.width * factor, image.height * factor), Image.LANCZOS).save(
                out / frame["file_path"], quality=95
            )
    shutil.copy(data / transforms.get("ply_file_path", "sparse_pc.ply"), out)
    (out / "transforms.json").write_text(json.dumps(transforms, indent=2))
    return out


def igs2gs_trainer(data: Path, load_dir: Path, out: Path, ip2p_model: str, **pipeline: Any) -> Any:
    """The default igs2gs trainer (vis viewer, quitting at the end), set up as ns-train sets it up."""
    from igs2gs.igs2gs_config import igs2gs_method

    config = igs2gs_method.config
    config.pipeline.datamanager.data = data
    config.load_dir = load_dir
    config.pipeline.ip2p_model = ip2p_model
    config.pipeline.prompt = "turn the bear into a panda"
    config.output_dir = out
    config.timestamp = "bench"
    config.viewer.quit_on_train_completion = True
    if torch.cuda.device_count() == 0:  # smoke test on a CPU-only machine (NVML's count: CUDA stays uninitialised)
        config.machine.device_type, config.vis = "cpu", "tensorboard"
    model_fields = pipeline.pop("model", {})
    for name, value in pipeline.items():
        assert hasattr(config.pipeline, name), name
        setattr(config.pipeline, name, value)
    for name, value in model_fields.items():
        assert hasattr(config.pipeline.model, name), name
        setattr(config.pipeline.model, name, value)
    config.save_config()
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    return trainer


class Timings:
    """Wall time of every training iteration and of every edit, the edits between CUDA synchronisations."""

    def __init__(self, trainer: Any) -> None:
        # (step, seconds, whether the step edited, whether a round was editing when it began)
        self.steps: list[tuple[int, float, bool, bool]] = []
        self.edits: list[float] = []
        self.background_edits: list[float] = []  # worker seconds per view (background rounds)
        self.round_waits: list[float] = []  # training waiting for a round's last edits (background rounds)
        self.gc = GarbageCollections()  # Python's collections in this process while it trains
        self.outside = OutsideSteps(trainer)  # the trainer's time around its iterations
        pipeline, iteration, edit_view = trainer.pipeline, trainer.train_iteration, trainer.pipeline.edit_view

        def timed_iteration(step: int) -> Any:
            t0 = time.perf_counter()
            n_edits, in_round = len(self.edits), pipeline.edit_round.active
            result = iteration(step)
            self.steps.append((step, time.perf_counter() - t0, len(self.edits) > n_edits, in_round))
            return result

        def timed_edit(*args: Any, **kwargs: Any) -> Any:
            sync()
            t0 = time.perf_counter()
            result = edit_view(*args, **kwargs)
            sync()
            self.edits.append(time.perf_counter() - t0)
            return result

        trainer.train_iteration = timed_iteration
        pipeline.edit_view = timed_edit
        if pipeline.async_round is not None:
            apply, complete = pipeline.apply_async_edit, pipeline.async_round.complete

            def counted_apply(result: Any, step: int) -> None:
                self.background_edits.append(result.seconds)
                apply(result, step)

            def timed_complete(*args: Any, **kwargs: Any) -> int:
                t0 = time.perf_counter()
                applied = complete(*args, **kwargs)
                self.round_waits.append(time.perf_counter() - t0)
                return applied

            pipeline.apply_async_edit = counted_apply
            pipeline.async_round.complete = timed_complete

    def summary(self, start_step: int) -> dict[str, Any]:
        edit_steps = [t for _, t, e, _ in self.steps if e]
        plain = [(t, r) for s, t, e, r in self.steps if not e and s > start_step + 2]
        return {
            "iterations": len(self.steps),
            "edit_calls": len(self.edits),
            "edit_s_total": sum(self.edits),
            "first_edit_s": self.edits[0] if self.edits else None,
            "median_edit_s_after_first": median(self.edits[1:]) if len(self.edits) > 1 else None,
            "edit_step_s_median": median(edit_steps) if edit_steps else None,
            "first_edit_step_s": edit_steps[0] if edit_steps else None,
            "edit_step_s_total": sum(edit_steps),
            **_step_stats("plain", [t for t, _ in plain]),
            # plain steps taken while a round was editing (in the background) and between rounds
            **_step_stats("in_round", [t for t, r in plain if r]),
            **_step_stats("between_rounds", [t for t, r in plain if not r]),
            "step_s_total": sum(t for _, t, _, _ in self.steps),
            "background_edits": len(self.background_edits),
            "background_edit_s_per_view_median": median(self.background_edits) if self.background_edits else None,
            "round_waits_s": [round(t, 2) for t in self.round_waits],
            "gc_collections": self.gc.summary(),
            "outside_steps": self.outside.summary(),
        }


class OutsideSteps:
    """Time the trainer spends outside its training iterations, by what spends it: checkpoints, the viewer's and
    the evaluation's per-step calls, and the run's end (the last round's edits, the edit processes told to stop, the
    journal's last writes, the wait for the edit processes' exit). Each is a method looked up on its object at every
    call, so wrapping it here counts it."""

    PARTS = {
        "save_checkpoint": ("trainer", "save_checkpoint"),
        "checkpoint_writes": ("checkpoint_writer", "wait"),  # waits for a checkpoint in flight (on its own thread)
        "viewer_update": ("trainer", "_update_viewer_state"),
        "eval_iteration": ("trainer", "eval_iteration"),
        "finish_round": ("async_round", "finish"),
        "stop_edit_process": ("edit_process", "stop"),
        "stop_helper": ("helper_process", "stop"),
        "flush_journal": ("keeper", "flush_journal"),
        "join_edit_processes": ("pipeline", "join_edit_processes"),
    }

    def __init__(self, trainer: Any) -> None:
        self.seconds = {name: 0.0 for name in self.PARTS}
        self.calls = {name: 0 for name in self.PARTS}
        pipeline = trainer.pipeline
        owners = {
            "trainer": trainer,
            "checkpoint_writer": getattr(trainer, "checkpoint_writer", None),
            "async_round": pipeline.async_round,
            "edit_process": getattr(pipeline, "edit_process", None),
            "helper_process": getattr(pipeline, "helper_process", None),
            "keeper": getattr(pipeline, "keeper", None),
            "pipeline": pipeline,
        }
        for name, (owner, method) in self.PARTS.items():
            if owners[owner] is not None and hasattr(owners[owner], method):
                setattr(owners[owner], method, self._timed(name, getattr(owners[owner], method)))

    def _timed(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - t0
                self.calls[name] += 1

        return timed

    def summary(self) -> dict[str, list]:
        """[calls, seconds] of each part that was called."""
        return {name: [self.calls[name], round(self.seconds[name], 3)] for name in self.PARTS if self.calls[name]}


class GarbageCollections:
    """Count and time Python's garbage collections per generation from now on (gc.callbacks)."""

    def __init__(self) -> None:
        import gc

        self.counts, self.seconds = [0, 0, 0], [0.0, 0.0, 0.0]
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.counts[info["generation"]] += 1
            self.seconds[info["generation"]] += time.perf_counter() - self._started

    def summary(self) -> dict[str, list]:
        return {f"gen{g}": [self.counts[g], round(self.seconds[g], 3)] for g in range(3)}


def _step_stats(name: str, seconds: list[float]) -> dict[str, Any]:
    """How many steps, and their median and mean in ms, under keys named after `name`."""
    return {
        f"{name}_steps": len(seconds),
        f"{name}_step_ms_median": 1000 * median(seconds) if seconds else None,
        f"{name}_step_ms_mean": 1000 * mean(seconds) if seconds else None,
    }


@contextlib.contextmanager
def nerfstudio_training_step(trainer: Any) -> Iterator[None]:
    """The plain training step as nerfstudio runs it: unfused Adam, SSIM computed (what igs2gs/train_speed.py
    changes), for runs of the original's configuration."""
    from benchmarks.profile_train_step import variants

    with variants(trainer)["nerfstudio_all"]():
        yield


def child_result(name: str, trainer: Any, timings: Timings, started: float, train_s: float, **extra: Any) -> dict:
    return {
        "name": name,
        "card": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "start_step": trainer._start_step,
        "process_to_train_start_s": extra.pop("setup_s"),
        "train_loop_s": train_s,
        "process_s": time.perf_counter() - started,
        "peak_gpu_allocated_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0,
        "peak_gpu_reserved_gib": torch.cuda.max_memory_reserved() / 2**30 if torch.cuda.is_available() else 0.0,
        "gaussians": int(trainer.pipeline.model.num_points),
        "lpips_graph_sizes": getattr(getattr(trainer.pipeline.model, "graphed_lpips", None), "sizes", None),
        "train_views": trainer.pipeline.datamanager.num_train_views,
        **timings.summary(trainer._start_step),
        **extra,
    }


def run_children(
    script: Path, names: list[str], args: list[str], out: Path, prefix: Callable[[str], list[str]] = lambda name: []
) -> dict[str, dict]:
    """Run `script --child NAME args` for each name (one process each, its command after `prefix(NAME)`, e.g. a
    profiler), collecting their JSON records."""
    results = {}
    for name in names:
        log = out / f"{name}.log"
        started = time.perf_counter()
        command = [*prefix(name), sys.executable, str(script), "--child", name, *args]
        result = subprocess.run(command, stdout=log.open("w"), stderr=subprocess.STDOUT)
        wall = time.perf_counter() - started
        record_file = Path("/tmp/igs2gs-bench") / f"{name}.json"
        if result.returncode != 0 or not record_file.exists():
            print(f"{name}: exit code {result.returncode}; log tail:\n{log.read_text()[-5000:]}", flush=True)
            results[name] = {"name": name, "failed": result.returncode, "wall_s": wall}
            continue
        results[name] = {**json.loads(record_file.read_text()), "wall_s": wall}
        record_file.write_text(json.dumps(results[name], indent=2, default=str))  # kept if a later run is cut short
        print(json.dumps(results[name]), flush=True)
    return results


def write_child_record(name: str, record: dict) -> None:
    folder = Path("/tmp/igs2gs-bench")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(record, indent=2, default=str))


def timed_train(trainer: Any, steps: Optional[int] = None, before: Optional[Callable[[], None]] = None) -> float:
    """trainer.train() for `steps` (default: the config's) steps; seconds."""
    if steps is not None:
        trainer.config.max_num_iterations = steps
    if before is not None:
        before()
    sync()
    t0 = time.perf_counter()
    trainer.train()
    sync()
    return time.perf_counter() - t0
