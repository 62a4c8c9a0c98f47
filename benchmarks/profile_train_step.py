"""Where a plain igs2gs training step spends its time on a GPU (nerfstudio's own trainer loop, no edits).

Builds the igs2gs trainer in-process on a splatfacto checkpoint (rounds pushed out of the way), then times
blocks of plain steps through `Trainer.train` with each of the step's speed switches turned back to
nerfstudio's behaviour one at a time (igs2gs/train_speed.py), a few diagnostic variants (no LPIPS, sparser
logging), one checkpoint save, a torch.profiler table and a cProfile of the Python side.

    python benchmarks/profile_train_step.py --data DATA --load-dir CKPT_DIR --out OUT_DIR [--steps 200] \
        [--ip2p-model DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import pstats
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def build_trainer(data: Path, load_dir: Path, out: Path, vis: str, ip2p_model: str) -> Any:
    from igs2gs.igs2gs_config import igs2gs_method

    config = igs2gs_method.config
    config.pipeline.ip2p_model = ip2p_model  # built at start-up on CUDA, though no round edits here
    config.pipeline.datamanager.data = data
    config.load_dir = load_dir
    config.output_dir = out
    config.vis = vis
    config.viewer.quit_on_train_completion = True
    config.timestamp = "profile"
    config.pipeline.gs_steps = 10**9  # no dataset-update round: plain steps only
    config.save_config()  # also creates the run folder, where the viewer writes its log
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    trainer._after_train = lambda: None  # no final save between blocks
    return trainer


def run_block(trainer: Any, steps: int) -> float:
    """Plain steps through nerfstudio's loop; seconds per step."""
    start = getattr(trainer, "step", trainer._start_step - 1) + 1
    trainer._start_step = max(start, trainer._start_step)
    trainer.config.max_num_iterations = steps
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    trainer.train()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


@contextlib.contextmanager
def patched(obj: Any, name: str, value: Any) -> Iterator[None]:
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


def variants(trainer: Any) -> dict[str, Callable[[], contextlib.AbstractContextManager[Any]]]:
    """Each returns a context that turns one thing back to nerfstudio's behaviour (or a diagnostic change)."""
    from nerfstudio.models.splatfacto import SplatfactoModel

    model = trainer.pipeline.model

    @contextlib.contextmanager
    def unfused_adam() -> Iterator[None]:
        groups = [g for o in trainer.optimizers.optimizers.values() for g in o.param_groups]
        for g in groups:
            g["fused"], g["foreach"] = False, None
        try:
            yield
        finally:
            for g in groups:
                g["fused"], g["foreach"] = True, False

    @contextlib.contextmanager
    def ssim_computed() -> Iterator[None]:
        def splatfacto_loss(outputs: Any, batch: Any, metrics_dict: Any = None) -> Any:
            loss_dict = SplatfactoModel.get_loss_dict(model, outputs, batch, metrics_dict)
            if model.config.lpips_loss_mult > 0:
                loss_dict["lpips_loss"] = model.config.lpips_loss_mult * model.lpips_loss(outputs, batch)
            return loss_dict

        with patched(model, "get_loss_dict", splatfacto_loss):
            yield

    def no_lpips() -> contextlib.AbstractContextManager[Any]:
        return patched(model.config, "lpips_loss_mult", 0.0)

    def log_every_100() -> contextlib.AbstractContextManager[Any]:
        return patched(trainer.config.logging, "steps_per_log", 100)

    return {
        "ours": contextlib.nullcontext,
        "unfused_adam": unfused_adam,
        "ssim_computed": ssim_computed,
        "nerfstudio_all": lambda: _all(unfused_adam(), ssim_computed()),
        "no_lpips(diag)": no_lpips,
        "log_every_100(diag)": log_every_100,
    }


@contextlib.contextmanager
def _all(*contexts: contextlib.AbstractContextManager[Any]) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for c in contexts:
            stack.enter_context(c)
        yield


def torch_profile(trainer: Any, steps: int) -> tuple[str, float]:
    """Key averages of `steps` plain steps, and the GPU kernel time per step (ms)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        run_block(trainer, steps)
    averages = prof.key_averages()
    kernel_us = sum(e.self_device_time_total for e in averages if e.device_type.name == "CUDA")
    table = averages.table(sort_by="self_cpu_time_total", row_limit=30)
    table += "\n" + averages.table(sort_by="self_device_time_total", row_limit=20)
    return table, kernel_us / 1000 / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--load-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--vis", default="viewer")
    parser.add_argument("--ip2p-model", default="timbrooks/instruct-pix2pix", help="hub id or local diffusers folder")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    trainer = build_trainer(args.data, args.load_dir, Path("/tmp/igs2gs-profile"), args.vis, args.ip2p_model)
    record: dict[str, Any] = {"card": torch.cuda.get_device_name(0), "setup_s": time.perf_counter() - t0}
    record["gaussians"] = int(trainer.pipeline.model.num_points)
    run_block(trainer, 50)  # warm-up
    trainer._init_viewer_state = lambda: None  # the viewer's scene is built once, not once per block
    blocks: dict[str, list[float]] = {}
    for _ in range(2):
        for name, context in variants(trainer).items():
            with context():
                blocks.setdefault(name, []).append(1000 * run_block(trainer, args.steps))
        print(json.dumps({k: [round(x, 2) for x in v] for k, v in blocks.items()}), flush=True)
    record["ms_per_step"] = {k: statistics.median(v) for k, v in blocks.items()}
    torch.cuda.synchronize()
    t1 = time.perf_counter()
    trainer.save_checkpoint(trainer.step)
    record["save_checkpoint_s"] = time.perf_counter() - t1
    table, kernel_ms = torch_profile(trainer, 30)
    record["gpu_kernel_ms_per_step"] = kernel_ms
    (args.out / "profile_torch.txt").write_text(table)
    profiler = cProfile.Profile()
    profiler.enable()
    run_block(trainer, 100)
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(45)
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(30)
    (args.out / "profile_cprofile.txt").write_text(text.getvalue())
    record["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30
    (args.out / "profile_train_step.json").write_text(json.dumps(record, indent=2))
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
