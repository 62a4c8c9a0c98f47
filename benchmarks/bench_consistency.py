"""Do the speed options change what igs2gs learns? A deterministic, view-consistent 2D editor in place of
InstructPix2Pix (a fixed colour transform of the original photo, injected through the pipeline's `_target`),
then the PSNR of held-out views against their transformed photos, with and without the speed options.

- `fast`: the defaults (edits in the background while training, several views per edit batch, fused Adam, no
  SSIM pass, LPIPS replayed as CUDA graphs).
- `paper`: one view rendered and edited per step, training waiting for it, nerfstudio's training step.

Both start from the same splatfacto checkpoint made in this run (relabelled as step 29,999, see
e2e_common.py). The run is shortened: rounds every --gs-steps (default 500) steps, 3 rounds (1,500 steps)
instead of 2,500 and 7,500; the PSNR after each is printed with the PSNR before training.

    python benchmarks/bench_consistency.py --data DATA/bear --out OUT [--load-dir CKPT_DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Optional

import torch

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
    write_child_record,
)
from igs2gs.editor import EditSettings  # noqa: E402
from igs2gs.igs2gs_pipeline import IGS2GSPipeline  # noqa: E402


def colour_transform(images: torch.Tensor) -> torch.Tensor:  # [B, 3, H, W] or [H, W, 3] (channels last)
    """A fixed colour transform: channels rotated (R <- G, G <- B, B <- R), contrast 0.9, offset 0.05."""
    if images.shape[-1] == 3 and images.ndim == 3:
        return images[..., [1, 2, 0]] * 0.9 + 0.05
    return images[:, [1, 2, 0]] * 0.9 + 0.05


class ColourTransformEditor:
    """An `ImageEditor` that returns the colour transform of the original photos (renders are ignored)."""

    def edit(
        self,
        renders: torch.Tensor,
        originals: torch.Tensor,
        settings: EditSettings,
        generator: Optional[Any] = None,
    ) -> torch.Tensor:
        return colour_transform(originals).clamp(0, 1).to(renders.device)


class ColourEditPipeline(IGS2GSPipeline):
    """igs2gs with the colour transform as its 2D editor."""

    def build_editor(self) -> ColourTransformEditor:
        return ColourTransformEditor()


@torch.no_grad()
def held_out_psnr(pipeline: Any) -> dict[str, float]:
    """Mean PSNR of the eval views' renders against their colour-transformed photos (and of the train views)."""
    model, dm = pipeline.model, pipeline.datamanager
    dm.cached_train, dm.cached_eval  # noqa: B018 (caching undistorts the images and resizes their cameras first)
    model.eval()
    out = {}
    for split, dataset, cache in (("eval", dm.eval_dataset, dm.cached_eval), ("train", dm.train_dataset, None)):
        scores = []
        for i in range(len(dataset)):
            camera = dataset.cameras[i : i + 1].to(model.device)
            rgb = model.get_outputs_for_camera(camera)["rgb"]
            photo = cache[i]["image"] if cache is not None else dm.original_image(i)
            target = colour_transform(photo[..., :3].to(rgb.device)).clamp(0, 1)
            mse = torch.mean((rgb - target) ** 2)
            scores.append(float(-10 * torch.log10(mse)))
        out[f"{split}_psnr"] = sum(scores) / len(scores)
        out[f"{split}_views"] = len(scores)
    model.train()
    return out


def child(args: argparse.Namespace) -> None:
    name, out = args.child, Path("/tmp/igs2gs-bench") / f"consistency-{args.child}"
    options: dict[str, Any] = {"gs_steps": args.gs_steps, "_target": ColourEditPipeline}
    if name == "paper":
        options.update(edit_batch_size=1, overlap_edits=False, model={"fused_adam": False, "lpips_cuda_graphs": False})
    trainer = igs2gs_trainer(args.data, args.load_dir, out, "unused", **options)
    before = held_out_psnr(trainer.pipeline)
    timings, setup_s = Timings(trainer), time.perf_counter() - STARTED
    if name == "paper":
        with nerfstudio_training_step(trainer):
            train_s = timed_train(trainer, 3 * args.gs_steps)
    else:
        train_s = timed_train(trainer, 3 * args.gs_steps)
    after = held_out_psnr(trainer.pipeline)
    record = child_result(name, trainer, timings, STARTED, train_s, setup_s=setup_s)
    record.update({"before": before, "after": after, "gs_steps": args.gs_steps, "steps": 3 * args.gs_steps})
    write_child_record(name, record)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("/tmp/igs2gs-bench/out"))
    parser.add_argument("--load-dir", type=Path)
    parser.add_argument("--splatfacto-steps", type=int, default=2000)
    parser.add_argument("--gs-steps", type=int, default=500)
    parser.add_argument("--runs", default="fast,paper")
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
    passthrough = ["--data", str(args.data), "--load-dir", str(args.load_dir), "--gs-steps", str(args.gs_steps)]
    record["runs"] = run_children(Path(__file__), args.runs.split(","), passthrough, args.out)
    (args.out / "bench_consistency.json").write_text(json.dumps(record, indent=2, default=str))
    print(f"\n{'run':8s} {'eval PSNR before':>16s} {'after':>7s} {'train PSNR after':>16s} {'train loop s':>12s}")
    for name, r in record["runs"].items():
        if r.get("failed"):
            print(f"{name:8s} failed")
            continue
        print(f"{name:8s} {r['before']['eval_psnr']:16.2f} {r['after']['eval_psnr']:7.2f} "
              f"{r['after']['train_psnr']:16.2f} {r['train_loop_s']:12.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
