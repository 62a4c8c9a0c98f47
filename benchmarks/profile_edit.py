"""Where an eager 8-view InstructPix2Pix edit spends its GPU time: the kernels of each piece.

The real architecture with random weights, float16, fused QKV, VAE one image at a time. Each piece of an edit
(`bench_edit.edit_pieces`: VAE encode of the renders, one denoising step, VAE decode) is timed with CUDA events in
three configurations: channels-last (the default before this script ran), contiguous, and contiguous with GroupNorm
from igs2gs/fast_group_norm.py (the new default), with the largest output difference the GroupNorm change makes.
The pieces of the last configuration are then profiled with torch.profiler: the summed kernel time against the event
time tells a GPU-bound piece from one waiting on kernel launches, and the kernel table tells which operations
dominate.

    python benchmarks/profile_edit.py --arch ARCH_DIR --out OUT_DIR [--views 8] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import bench_edit  # noqa: E402
from benchmarks.make_random_ip2p import DEFAULT_ARCH, build_arch_components  # noqa: E402
from igs2gs.ip2p import InstructPix2PixEditor  # noqa: E402

CONFIGS = ("channels-last", "contiguous", "contiguous+group-norm")
"""Memory format of the UNet and VAE, and whether GroupNorm takes igs2gs/fast_group_norm.py."""


def set_config(editor: InstructPix2PixEditor, config: str) -> None:
    editor.enable_fast_kernels(channels_last=config == "channels-last", group_norm=config.endswith("group-norm"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", type=Path, default=DEFAULT_ARCH)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--views", type=int, default=8)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--rows", type=int, default=20)
    parser.add_argument("--smoke", action="store_true", help="check this script on the CPU with the tiny model")
    args = parser.parse_args()
    from diffusers import DDIMScheduler

    if args.smoke:
        from tests.tiny_ip2p import tiny_components

        bench_edit.DEVICE = "cpu"
        parts, dtype, card = tiny_components(), torch.float32, "cpu (smoke test, tiny model)"
        args.size = 64
    else:
        parts = build_arch_components(args.arch, device="cuda")
        dtype, card = torch.float16, torch.cuda.get_device_name(0)
    device = bench_edit.DEVICE
    parts["scheduler"] = DDIMScheduler.from_config(parts["scheduler"].config)
    editor = InstructPix2PixEditor(**parts, device=device, dtype=dtype)
    editor.enable_vae_slicing()
    editor.enable_fast_kernels(group_norm=False)  # fused QKV
    record: dict[str, Any] = {"card": card, "torch": torch.__version__, "views": args.views, "size": args.size}
    lines = [f"{card}, torch {torch.__version__}, {args.views} views at {args.size} px, eager, {dtype}"]
    outputs: dict[str, dict[str, Any]] = {}
    for config in CONFIGS:
        set_config(editor, config)
        record[config] = {}
        lines.append(f"\n== {config} (ms, CUDA events)")
        for name, fn in bench_edit.edit_pieces(editor, args.views, args.size).items():
            torch.manual_seed(0)
            outputs.setdefault(config, {})[name] = fn()
            record[config][name] = {"event_ms": bench_edit.median_ms(fn)}
            lines.append(f"{name}: {record[config][name]['event_ms']:.2f}")
    for name in outputs[CONFIGS[-1]]:  # how far the GroupNorm change moves each piece's output
        a, b = outputs["contiguous"][name], outputs[CONFIGS[-1]][name]
        a, b = (a[0], b[0]) if isinstance(a, tuple) else (a, b)
        record[CONFIGS[-1]][name]["max_abs_diff_vs_torch_group_norm"] = diff = float((a - b).abs().max())
        lines.append(f"{name}: max |output difference| against torch's GroupNorm {diff:.3g}")
    for name, fn in bench_edit.edit_pieces(editor, args.views, args.size).items():
        kernel_ms, count, top, _ = bench_edit.kernel_table(fn, args.rows)
        record[CONFIGS[-1]][name].update(kernel_ms=kernel_ms, kernels=count, top=top)
        lines.append(f"\n== {CONFIGS[-1]}, {name}: {kernel_ms:.2f} ms in {count} kernels")
        lines += [f"{k['ms']:8.3f} ms {k['calls']:5d}x  {k['kernel']}" for k in top]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "profile_edit.json").write_text(json.dumps(record, indent=2))
    (args.out / "profile_edit.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
