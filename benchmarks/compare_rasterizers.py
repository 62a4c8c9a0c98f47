"""Compare igs2gs's pure-PyTorch rasterizer with gsplat's CUDA rasterizer on seeded random scenes.

For each scenario (image size, number of Gaussians, seed) both render the same scene with SH degree 3 the way
splatfacto calls them (packed=False, RGB+ED), then backpropagate the same random weighting of colors and alphas.
gsplat's CUDA output is the reference: the script prints and records the max and mean absolute difference of colors,
depth, alphas and of the gradients w.r.t. means, quats, scales, opacities and SH coefficients (gradients also relative
to the reference's largest magnitude), with each backend's time and peak GPU memory. A last, smaller scenario runs
`rasterization_torch` on CPU copies of the scene against the same CUDA reference.

    python benchmarks/compare_rasterizers.py --out rasterizers.json [--sizes 2000 10000 50000] [--seeds 0 1 2]

Needs a CUDA device and gsplat's CUDA extension. Writes one JSON record per scenario, with the device named.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, without installing igs2gs

from igs2gs.cpu_rasterizer import rasterization_torch  # noqa: E402

SH_DEGREE = 3
PARAM_NAMES = ("means", "quats", "scales", "opacities", "colors")


def make_scene(n_gauss: int, seed: int, width: int, height: int) -> dict[str, torch.Tensor]:
    """Gaussians in a box in front of one camera (a few behind it or outside the view), float32 on CPU."""
    gen = torch.Generator().manual_seed(seed)
    depth = 2.0 + 4.0 * torch.rand(n_gauss, generator=gen)  # [N], most in front of the camera
    depth[: n_gauss // 50] -= 7.0  # 2 % behind the camera
    xy = (torch.rand(n_gauss, 2, generator=gen) - 0.5) * 2.4 * depth[:, None]  # slightly wider than the view
    means = torch.cat([xy, depth[:, None]], dim=-1)  # [N, 3]
    # A fraction of the spacing of the points, with a log-normal spread: some pixels opaque, some see through.
    spacing = (4.0 * 4.0 * 4.0 / n_gauss) ** (1 / 3)
    scales = 0.25 * spacing * torch.exp(0.5 * torch.randn(n_gauss, 3, generator=gen))  # [N, 3]
    quats = torch.randn(n_gauss, 4, generator=gen)  # [N, 4]
    opacities = torch.sigmoid(torch.randn(n_gauss, generator=gen) * 2.0)  # [N]
    sh = torch.randn(n_gauss, (SH_DEGREE + 1) ** 2, 3, generator=gen) * 0.15  # [N, K, 3]
    sh[:, 0] = (torch.rand(n_gauss, 3, generator=gen) - 0.5) / 0.28209479177387814  # DC: colors in [0, 1]
    focal = 0.9 * width
    Ks = torch.tensor([[[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]]])  # [1, 3, 3]
    viewmats = torch.eye(4)[None]  # [1, 4, 4], camera at the origin looking down +z
    backgrounds = torch.rand(1, 3, generator=gen)  # [1, 3]
    loss_weights = torch.rand(1, height, width, 5, generator=gen)  # colors, depth and alpha weights
    return dict(
        means=means, quats=quats, scales=scales, opacities=opacities, colors=sh, viewmats=viewmats, Ks=Ks,
        backgrounds=backgrounds, loss_weights=loss_weights,
    )  # fmt: skip


def render_and_grad(
    rasterize: Callable[..., Any], scene: dict[str, torch.Tensor], device: torch.device, width: int, height: int
) -> dict[str, Any]:
    """Render with `rasterize` on `device`, backpropagate the weighted sum; outputs and gradients on CPU."""
    # A fresh leaf per call: `.to("cpu")` of a CPU tensor is the tensor itself, whose .grad would accumulate.
    params = {name: scene[name].to(device, copy=True).requires_grad_() for name in PARAM_NAMES}
    weights = scene["loss_weights"].to(device)
    colors, alphas, _ = rasterize(
        **params, viewmats=scene["viewmats"].to(device), Ks=scene["Ks"].to(device), width=width, height=height,
        sh_degree=SH_DEGREE, packed=False, render_mode="RGB+ED", backgrounds=scene["backgrounds"].to(device),
    )  # fmt: skip
    loss = (colors * weights[..., :4]).sum() + (alphas * weights[..., 4:]).sum()
    loss.backward()
    return {
        "rgb": colors[..., :3].detach().cpu(),
        "depth": colors[..., 3:].detach().cpu(),
        "alphas": alphas.detach().cpu(),
        "grads": {name: param.grad.detach().cpu() for name, param in params.items()},
    }


def timed(fn: Callable[[], dict[str, Any]], device: torch.device, repeats: int) -> tuple[dict[str, Any], dict]:
    """Warm up once, then run `repeats` times; the last result, median seconds and peak GPU memory."""
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    stats = {"seconds_median": sorted(times)[len(times) // 2], "seconds_min": min(times)}
    if device.type == "cuda":
        stats["peak_gpu_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return result, stats


def differences(ours: dict[str, Any], reference: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Max / mean absolute differences per output and gradient (gradients also relative to the reference)."""

    def diff(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
        err = (a.double() - b.double()).abs()
        scale = float(b.abs().max())
        return {
            "max_abs": float(err.max()),
            "mean_abs": float(err.mean()),
            "max_abs_rel": float(err.max()) / scale if scale > 0 else math.nan,
            "mean_abs_rel": float(err.mean()) / scale if scale > 0 else math.nan,
        }

    out = {key: diff(ours[key], reference[key]) for key in ("rgb", "depth", "alphas")}
    out.update({f"grad_{name}": diff(ours["grads"][name], reference["grads"][name]) for name in PARAM_NAMES})
    return out


def run_scenario(
    n_gauss: int, seed: int, width: int, height: int, torch_device: torch.device, repeats: int
) -> dict[str, Any]:
    from gsplat.rendering import rasterization

    cuda = torch.device("cuda")
    scene = make_scene(n_gauss, seed, width, height)
    reference, cuda_stats = timed(lambda: render_and_grad(rasterization, scene, cuda, width, height), cuda, repeats)
    ours, torch_stats = timed(
        lambda: render_and_grad(rasterization_torch, scene, torch_device, width, height), torch_device, repeats
    )
    # Depth is only defined where something was drawn; compare it where both alphas are above 0.5.
    covered = (reference["alphas"] > 0.5) & (ours["alphas"] > 0.5)
    reference["depth"], ours["depth"] = reference["depth"][covered], ours["depth"][covered]
    return {
        "n_gaussians": n_gauss,
        "seed": seed,
        "width": width,
        "height": height,
        "sh_degree": SH_DEGREE,
        "torch_device": str(torch_device),
        "gsplat_cuda": cuda_stats,
        "rasterization_torch": torch_stats,
        "mean_alpha": float(reference["alphas"].mean()),
        "differences": differences(ours, reference),
    }


def _print_record(record: dict[str, Any]) -> None:
    d = record["differences"]
    print(
        f"N={record['n_gaussians']:>6} seed={record['seed']} {record['width']}x{record['height']} "
        f"torch on {record['torch_device']}: "
        f"{record['rasterization_torch']['seconds_median'] * 1e3:.1f} ms "
        f"(gsplat {record['gsplat_cuda']['seconds_median'] * 1e3:.2f} ms, "
        f"peak {record['rasterization_torch'].get('peak_gpu_mib', float('nan')):.0f} MiB)"
    )
    for key, value in d.items():
        rel = (
            f"  (rel max {value['max_abs_rel']:.2e} mean {value['mean_abs_rel']:.2e})" if key.startswith("grad") else ""
        )
        print(f"    {key:<16} max {value['max_abs']:.3e}  mean {value['mean_abs']:.3e}{rel}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write the records to")
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 10000, 50000], help="numbers of Gaussians")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--cpu-size", type=int, default=2000, help="Gaussians of the CPU scenario (0 to skip)")
    parser.add_argument("--cpu-resolution", type=int, default=128, help="image side of the CPU scenario")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("compare_rasterizers.py needs a CUDA device for gsplat's rasterizer; none is available.")

    header = {
        "device": torch.cuda.get_device_name(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "gsplat": __import__("gsplat").__version__,
    }
    print(json.dumps(header), flush=True)
    scenarios = [(n, seed, args.width, args.height, "cuda") for n in args.sizes for seed in args.seeds]
    if args.cpu_size > 0:
        scenarios.append((args.cpu_size, args.seeds[0], args.cpu_resolution, args.cpu_resolution, "cpu"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    records = []
    for n_gauss, seed, width, height, device in scenarios:
        record = run_scenario(n_gauss, seed, width, height, torch.device(device), args.repeats)
        records.append({**header, **record})
        _print_record(record)
        args.out.write_text(json.dumps(records, indent=2))  # after each scenario, so a time limit keeps the rest
    print(f"wrote {len(records)} records to {args.out}")


if __name__ == "__main__":
    main()
