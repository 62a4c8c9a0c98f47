"""Probe: does torch.compile's ahead-of-time path (dynamo's `aot_compile`) give a compiled module back in a fresh
process without tracing it again?

A run that finds its compiled editor in the compile cache still traces the model with dynamo (about 18-25 s for
InstructPix2Pix on an H200, benchmarks/RESULTS.md), and an AOTInductor package of the denoising step crashed on load
(torch 2.11). Dynamo's AOT compile (`OptimizedModule._aot_compile`, experimental) keeps the traced, compiled graphs
with their guards in bytes that a fresh process loads onto its own module, whose weights it already has.

This checks that path on a small module with the editor's kinds of layers (convolution, GroupNorm, SDPA attention,
linear), float16 on CUDA (float32 on the CPU): which of the APIs this torch has, compile and save in this process,
then in a fresh process build the same module, load the bytes, and report the load time, whether dynamo compiled
anything, the largest difference against eager and the step time against eager. Not used by the plugin.

    python benchmarks/probe_precompile.py --out OUT.json [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn


class Block(nn.Module):
    """A residual convolution block and a self-attention over its pixels, as in the UNet."""

    def __init__(self, channels: int = 64, heads: int = 2) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(8, channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(8, channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.out = nn.Linear(channels, channels)
        self.heads = heads

    def forward(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        x = x + self.conv1(nn.functional.silu(self.norm1(x))) * scale
        b, c, h, w = x.shape
        tokens = self.norm2(x).flatten(2).transpose(1, 2)
        q, k, v = self.qkv(tokens).view(b, h * w, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attended = nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, h * w, c)
        return x + self.out(attended).transpose(1, 2).view(b, c, h, w)


def build(device: str) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """The same module and inputs in every process (fixed seed)."""
    torch.manual_seed(0)
    dtype = torch.float16 if device == "cuda" else torch.float32
    model = Stack(nn.ModuleList(Block() for _ in range(4))).to(device, dtype).eval()
    x = torch.randn(8, 64, 32, 32, device=device, dtype=dtype)
    return model, (x, torch.tensor(0.5, device=device, dtype=dtype))


class Stack(nn.Module):
    """Blocks one after the other."""

    def __init__(self, blocks: nn.ModuleList) -> None:
        super().__init__()
        self.blocks = blocks

    def forward(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, scale)
        return x


def step_ms(fn: Any, args: tuple[torch.Tensor, ...], device: str, repeats: int = 20) -> float:
    """Median milliseconds of fn(*args), synchronised."""
    times = []
    for i in range(repeats + 3):
        t0 = time.perf_counter()
        fn(*args)
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= 3:
            times.append(1000 * (time.perf_counter() - t0))
    return sorted(times)[len(times) // 2]


def apis() -> dict[str, bool]:
    """Which pieces of the AOT compile path this torch has."""
    from torch._dynamo.eval_frame import OptimizedModule

    return {
        "enable_aot_compile": hasattr(torch._dynamo.config, "enable_aot_compile"),
        "module_aot_compile": hasattr(OptimizedModule, "_aot_compile"),
        "load_compiled_function": hasattr(torch.compiler, "load_compiled_function"),
    }


def compile_and_save(device: str, path: Path) -> dict[str, Any]:
    from torch._dynamo.aot_compile import ModelInput

    torch._dynamo.config.enable_aot_compile = True
    model, args = build(device)
    compiled = torch.compile(model, fullgraph=True)
    t0 = time.perf_counter()
    with torch.no_grad():
        compiled._aot_compile([ModelInput(args=args, kwargs={}, contexts=[torch.no_grad()])])
    compile_s = time.perf_counter() - t0
    data = compiled._save_aot_compiled_module(str(path))
    with torch.no_grad():
        diff = (compiled(*args) - model(*args)).abs().max().item()
    return {"compile_s": compile_s, "artifact_kib": len(data) / 1024, "max_abs_diff_vs_eager": diff}


def load_and_run(device: str, path: Path) -> dict[str, Any]:
    """In a fresh process: the same module, the saved compile loaded onto it, no tracing expected."""
    from torch._dynamo.utils import counters

    torch._dynamo.config.enable_aot_compile = True
    model, args = build(device)
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    compiled = torch.compile(model, fullgraph=True)
    compiled._load_aot_compiled_module(path.read_bytes())
    load_s = time.perf_counter() - t0
    with torch.no_grad():
        t0 = time.perf_counter()
        out = compiled(*args)
        if device == "cuda":
            torch.cuda.synchronize()
        first_s = time.perf_counter() - t0
        diff = (out - model(*args)).abs().max().item()
        return {
            "load_s": load_s,
            "first_call_s": first_s,
            "dynamo_graphs_compiled": counters["stats"]["unique_graphs"],
            "max_abs_diff_vs_eager": diff,
            "compiled_ms": step_ms(compiled, args, device),
            "eager_ms": step_ms(model, args, device),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--artifact", type=Path, default=Path("/tmp/igs2gs-precompile.bin"))
    parser.add_argument("--load", action="store_true", help=argparse.SUPPRESS)  # the fresh process's part
    args = parser.parse_args()
    if args.load:
        print(json.dumps(load_and_run(args.device, args.artifact)))
        return
    record: dict[str, Any] = {"torch": torch.__version__, "device": args.device, "apis": apis()}

    def save(**values: Any) -> None:
        record.update(values)
        args.out.write_text(json.dumps(record, indent=2))
        print(json.dumps(values), flush=True)

    save()
    try:
        save(compile=compile_and_save(args.device, args.artifact))
    except Exception as error:  # noqa: BLE001 - the probe reports what this torch lacks
        save(compile_error=f"{type(error).__name__}: {error}"[:2000])
        return
    loads = []
    for _ in range(2):
        command = [sys.executable, __file__, "--out", "-", "--device", args.device, "--artifact", str(args.artifact)]
        out = subprocess.run(command + ["--load"], capture_output=True, text=True, timeout=300)
        if out.returncode == 0:
            loads.append(json.loads(out.stdout.strip().splitlines()[-1]))
        else:
            loads.append({"exit_code": out.returncode, "stderr_tail": out.stderr[-2000:]})
        save(fresh_process_loads=loads)


if __name__ == "__main__":
    main()
