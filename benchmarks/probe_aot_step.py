"""Probe: InstructPix2Pix's denoising step compiled ahead of time with AOTInductor, and how fast it loads.

A run that finds its torch.compile'd editor in the compile cache still traces the model with dynamo and loads
the cached kernels: 9.5-18 s on an H200 (benchmarks/RESULTS.md), which keeps the compiled editor out of a
two-GPU run's first round. An AOTInductor package (torch.export + `aoti_compile_and_package`) loads without
tracing. This times, for the 8-view 512 px step of the compile configuration (channels-last, fused QKV, torch's
GroupNorm): export, package build, the package's load in a fresh process, and the step's median against eager.
Not used by the plugin; the numbers decide whether the editor should keep its compiled pieces this way.

    python benchmarks/probe_aot_step.py --ip2p-model IP2P_DIR --out OUT.json [--views 8] [--size 512]
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

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.bench_edit import median_ms  # noqa: E402

LOAD_IN_FRESH_PROCESS = """
import sys, time
t0 = time.perf_counter()
import torch, torch._inductor
torch.zeros(1, device="cuda")  # a CUDA context first: a load without one crashed (H200, torch 2.11); cause not known
t1 = time.perf_counter()
step = torch._inductor.aoti_load_package(sys.argv[1])
t2 = time.perf_counter()
args = torch.load(sys.argv[2])
step(*args)
torch.cuda.synchronize()
t3 = time.perf_counter()
print(f"{t1 - t0} {t2 - t1} {t3 - t2}")
"""


class DenoiseStep(torch.nn.Module):
    """The editor's denoising step as a module (its UNet's parameters are this module's), for torch.export."""

    def __init__(self, editor: Any) -> None:
        super().__init__()
        self.unet = editor.unet
        self._editor = [editor]  # not a submodule

    def forward(self, latents, condition, text, timesteps, guidance, factors):  # noqa: ANN001, ANN201
        return self._editor[0].denoise_step(latents, condition, text, timesteps, guidance, factors, 0.0)


def step_inputs(editor: Any, views: int, size: int) -> tuple[torch.Tensor, ...]:
    """Fixed random inputs of one `views`-view denoising step at `size` px."""
    latent = size // editor.vae_scale_factor
    g = torch.Generator("cpu").manual_seed(0)
    latents = torch.randn(views, 4, latent, latent, generator=g).cuda()
    condition = torch.randn(3 * views, 4, latent, latent, generator=g).cuda().to(editor.dtype)
    text = editor.encode_prompt("turn the bear into a panda").repeat_interleave(views, dim=0)
    timesteps = torch.full((3 * views,), 500, device="cuda", dtype=torch.long)
    guidance = torch.tensor([12.5, 1.5], device="cuda")
    factors = (torch.rand(4, views, generator=g) * 0.5 + 0.25).cuda()
    return latents, condition, text, timesteps, guidance, factors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ip2p-model", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/igs2gs-aot"))
    parser.add_argument("--views", type=int, default=8)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--load-timeout", type=float, default=90.0, help="seconds for each load in a fresh process")
    args = parser.parse_args()
    from igs2gs.ip2p import load_ip2p_editor

    record: dict[str, Any] = {"card": torch.cuda.get_device_name(), "torch": torch.__version__}

    def save(**values: Any) -> None:
        record.update(values)
        args.out.write_text(json.dumps(record, indent=2))
        print(json.dumps(values), flush=True)

    args.work.mkdir(parents=True, exist_ok=True)
    editor = load_ip2p_editor(args.ip2p_model, device="cuda")
    editor.enable_fast_kernels(channels_last=True, group_norm=False)  # as configure_editor does with ip2p_compile
    module = DenoiseStep(editor).eval()
    inputs = step_inputs(editor, args.views, args.size)
    with torch.no_grad():
        reference = module(*inputs)
        save(eager_step_ms=median_ms(lambda: module(*inputs)))
        t0 = time.perf_counter()
        exported = torch.export.export(module, inputs)
        save(export_s=time.perf_counter() - t0)
    t0 = time.perf_counter()
    package = torch._inductor.aoti_compile_and_package(exported, package_path=str(args.work / "step.pt2"))
    save(package_build_s=time.perf_counter() - t0, package_mib=Path(package).stat().st_size / 2**20)
    torch.save(inputs, args.work / "inputs.pt")
    # In this process first: a first load in a fresh process had not ended after about 80 s (H200, torch 2.11).
    t0 = time.perf_counter()
    loaded = torch._inductor.aoti_load_package(package)
    save(in_process_load_s=time.perf_counter() - t0)

    def step(*values: torch.Tensor) -> torch.Tensor:
        out = loaded(*values)
        return out[0] if isinstance(out, (list, tuple)) else out

    with torch.no_grad():
        diff = (step(*inputs) - reference).abs().max().item()
        save(aot_step_ms=median_ms(lambda: step(*inputs)), max_abs_diff_vs_eager=diff)
    loads: list[Any] = []
    for _ in range(2):  # the second load finds the package in the page cache, as a later run would
        try:
            out = subprocess.run(
                [sys.executable, "-c", LOAD_IN_FRESH_PROCESS, package, str(args.work / "inputs.pt")],
                capture_output=True, text=True, timeout=args.load_timeout,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            loads.append({"timed_out_s": args.load_timeout})
        else:
            if out.returncode != 0:  # H200, torch 2.11: a SIGSEGV without a CUDA context first
                loads.append({"exit_code": out.returncode, "stderr_tail": out.stderr[-1500:]})
            else:
                times = map(float, out.stdout.split()[-3:])
                loads.append(dict(zip(("import_torch_s", "load_s", "first_step_s"), times)))
        save(fresh_process_loads=loads)


if __name__ == "__main__":
    main()
