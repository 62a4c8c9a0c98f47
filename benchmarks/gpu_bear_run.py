"""The bear run on a GPU: splatfacto 2,500 steps, then igs2gs through one full edit round plus 100 steps.

Prints and writes (JSON) the time per edit, per plain training step, peak GPU memory and the card.

    python benchmarks/gpu_bear_run.py --data DATA/bear --ip2p-model IP2P_FOLDER --out OUT_DIR

1. `ns-train splatfacto` (the real CLI) for 2,500 steps: its checkpoint (step 2,499) lies inside both
   splatfacto's densification window and its resolution schedule.
2. `ns-train igs2gs` (the real CLI) for a few steps, so the first edit runs through the CLI.
3. The same igs2gs run in this process for one full round plus 100 steps, each training iteration timed
   with CUDA synchronisation (the trainer and its setup are nerfstudio's own, exactly as ns-train runs them).
4. `ns-render` and `ns-export gaussian-splat` on the igs2gs output (they must not build the editor).

With `--ip2p-model` a random-weight folder of the real architecture (benchmarks/make_random_ip2p.py),
costs are those of the real model; the edits themselves are noise.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from benchmarks.e2e_common import Timings, igs2gs_trainer, ns_bin, run_logged, timed_train


def latest_config(root: Path) -> Path:
    return sorted(root.rglob("config.yml"), key=lambda p: p.stat().st_mtime)[-1]


def timed_igs2gs(data: Path, load_dir: Path, ip2p_model: str, out: Path, extra_steps: int) -> dict:
    """Train igs2gs in-process through one round + `extra_steps`, timing every iteration and edit."""
    trainer = igs2gs_trainer(data, load_dir, out, ip2p_model)
    start, gs_steps = trainer._start_step, trainer.config.pipeline.gs_steps
    first_edit = start + ((1 - start) % gs_steps)  # the first step s >= start with (s - 1) % gs_steps == 0
    num_views = trainer.pipeline.datamanager.num_train_views
    timings = Timings(trainer)
    torch.cuda.reset_peak_memory_stats()
    wall = timed_train(trainer, (first_edit - start) + num_views + extra_steps)
    return {
        "start_step": start,
        "train_views": num_views,
        **timings.summary(start),
        "peak_gpu_memory_gib": torch.cuda.max_memory_allocated() / 2**30,
        "wall_s": wall,
        "num_gaussians": int(trainer.pipeline.model.num_points),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--ip2p-model", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--splatfacto-steps", type=int, default=2500)
    parser.add_argument("--extra-steps", type=int, default=100)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path("/tmp/igs2gs-gpu-run")
    record: dict = {"card": torch.cuda.get_device_name(0), "torch": torch.__version__}

    record["splatfacto_wall_s"] = run_logged(
        [ns_bin("ns-train"), "splatfacto", "--data", str(args.data), "--output-dir", str(work / "base"),
         "--max-num-iterations", str(args.splatfacto_steps), "--vis", "tensorboard",
         "--viewer.quit-on-train-completion", "True"],
        args.out / "splatfacto.log",
    )  # fmt: skip
    load_dir = latest_config(work / "base").parent / "nerfstudio_models"
    record["checkpoint"] = sorted(p.name for p in load_dir.iterdir())

    record["igs2gs_cli_wall_s"] = run_logged(
        [ns_bin("ns-train"), "igs2gs", "--data", str(args.data), "--load-dir", str(load_dir),
         "--output-dir", str(work / "cli"), "--max-num-iterations", "4", "--vis", "tensorboard",
         "--pipeline.ip2p-model", args.ip2p_model, "--pipeline.prompt", "turn the bear into a panda"],
        args.out / "igs2gs_cli.log",
    )  # fmt: skip

    record["timed"] = timed_igs2gs(args.data, load_dir, args.ip2p_model, work / "timed", args.extra_steps)
    print(json.dumps(record, indent=2), flush=True)

    config = latest_config(work / "timed")
    export = [ns_bin("ns-export"), "gaussian-splat", "--load-config", str(config), "--output-dir", str(work / "export")]
    run_logged(export, args.out / "export.log")
    record["export_ply_mb"] = (work / "export" / "splat.ply").stat().st_size / 2**20
    run_logged([ns_bin("ns-render"), "dataset", "--load-config", str(config), "--output-path", str(work / "render"),
             "--split", "test", "--rendered-output-names", "rgb"], args.out / "render.log")  # fmt: skip
    record["rendered_images"] = len(list((work / "render").rglob("*.jpg")) + list((work / "render").rglob("*.png")))
    for log in ("export.log", "render.log"):
        assert "loading InstructPix2Pix" not in (args.out / log).read_text(), f"{log}: IP2P was built"
    (args.out / "gpu_bear_run.json").write_text(json.dumps(record, indent=2))
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
