"""Probe: InstructPix2Pix's denoising step compiled ahead of time with AOTInductor, and how fast it loads.

A run that finds its torch.compile'd editor in the compile cache still traces the model with dynamo and loads
the cached kernels: 9.5-18 s on an H200 (benchmarks/RESULTS.md), which keeps the compiled editor out of a
two-GPU run's first round. An AOTInductor package (torch.export + `aoti_compile_and_package`) loads without
tracing. This times, for the 8-view 512 px step of the compile configuration (channels-last, fused QKV, torch's
GroupNorm): export, package build, and in fresh processes (a crash there is reported, not fatal) the package's load, the
step's median and its largest difference against eager.

With `--weights outside` (the default) the package holds no weights (`aot_inductor.package_constants_in_so`
False): the loaded step is handed the editor's tensors, shared (`load_constants(user_managed=True)`, as an edit
process that has already loaded InstructPix2Pix would) and copied. The shared load crashed when run in the process
that built the package (H200, torch 2.11). A package with its weights inside (`--weights inside`) was
1,647 MiB, and its first load in a fresh process had not ended after about 80 s (H200, torch 2.11).
Not used by the plugin; the numbers decide whether the editor should keep its compiled pieces this way.

    python benchmarks/probe_aot_step.py --ip2p-model IP2P_DIR --out OUT.json [--views 8] [--size 512]
    python benchmarks/probe_aot_step.py --smoke --out OUT.json   # this script on the CPU, tiny model, no timing
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

import benchmarks.bench_edit as bench_edit  # noqa: E402
from benchmarks.bench_edit import median_ms  # noqa: E402

LOAD_IN_FRESH_PROCESS = """
import json, statistics, sys, time
t0 = time.perf_counter()
import torch, torch._inductor
package, work, mode, device = sys.argv[1:5]
if device == "cuda":
    torch.zeros(1, device="cuda")  # a CUDA context first: a load without one crashed (H200, torch 2.11)
t1 = time.perf_counter()
step = torch._inductor.aoti_load_package(package)
t2 = time.perf_counter()
times = {"import_torch_s": t1 - t0, "load_package_s": t2 - t1}
if mode != "inside":  # the weights, on the device (an edit process has them there already)
    weights = torch.load(work + "/weights.pt", map_location=device)
    fqns = step.get_constant_fqns()
    t3 = time.perf_counter()
    step.load_constants({fqn: weights[fqn] for fqn in fqns}, check_full_update=True, user_managed=mode == "user")
    times.update(read_weights_s=t3 - t2, load_constants_s=time.perf_counter() - t3, constants=len(fqns))
args = torch.load(work + "/inputs.pt", map_location=device)
reference = torch.load(work + "/reference.pt", map_location=device)
def run():
    out = step(*args)
    return out[0] if isinstance(out, (list, tuple)) else out
t4 = time.perf_counter()
with torch.no_grad():
    out = run()
    if device == "cuda":
        torch.cuda.synchronize()
    times.update(first_step_s=time.perf_counter() - t4, max_abs_diff_vs_eager=(out - reference).abs().max().item())
    ms = []
    for _ in range(13):
        t5 = time.perf_counter()
        run()
        if device == "cuda":
            torch.cuda.synchronize()
        ms.append(1000 * (time.perf_counter() - t5))
times["step_ms"] = statistics.median(ms[3:])
print(json.dumps(times))
"""
"""A fresh process: load the package (and hand it the weights: `user` shares the editor's tensors, `copy` lets the
package copy them), then step once against the eager reference and time ten steps (median, synchronised clock)."""


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
    device = editor.device
    g = torch.Generator("cpu").manual_seed(0)
    latents = torch.randn(views, 4, latent, latent, generator=g).to(device)
    condition = torch.randn(3 * views, 4, latent, latent, generator=g).to(device, editor.dtype)
    text = editor.encode_prompt("turn the bear into a panda").repeat_interleave(views, dim=0)
    timesteps = torch.full((3 * views,), 500, device=device, dtype=torch.long)
    guidance = torch.tensor([12.5, 1.5], device=device)
    factors = (torch.rand(4, views, generator=g) * 0.5 + 0.25).to(device)
    return latents, condition, text, timesteps, guidance, factors


def build_editor(args: argparse.Namespace) -> Any:
    """InstructPix2Pix as `configure_editor` sets it up for the compile configuration (or the tiny CPU model)."""
    from igs2gs.ip2p import load_ip2p_editor

    if args.smoke:
        from diffusers import DDIMScheduler

        from igs2gs.ip2p import InstructPix2PixEditor
        from tests.tiny_ip2p import tiny_components

        bench_edit.DEVICE = "cpu"  # median_ms times with the clock, not CUDA events
        parts = tiny_components()
        parts["scheduler"] = DDIMScheduler.from_config(parts["scheduler"].config)
        return InstructPix2PixEditor(**parts, device="cpu", dtype=torch.float32)
    editor = load_ip2p_editor(args.ip2p_model, device="cuda")
    editor.enable_fast_kernels(channels_last=True, group_norm=False)  # as configure_editor does with ip2p_compile
    return editor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ip2p-model")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/igs2gs-aot"))
    parser.add_argument("--views", type=int, default=8)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--weights", choices=("outside", "inside"), default="outside")
    parser.add_argument("--load-timeout", type=float, default=90.0, help="seconds for each load in a fresh process")
    parser.add_argument("--smoke", action="store_true", help="check this script on the CPU with the tiny model")
    args = parser.parse_args()
    if args.smoke:
        args.size = min(args.size, 64)
    elif not args.ip2p_model:
        parser.error("--ip2p-model is needed (or --smoke)")

    editor = build_editor(args)
    device = editor.device.type
    card = torch.cuda.get_device_name() if device == "cuda" else "cpu (smoke test, tiny model)"
    record: dict[str, Any] = {"card": card, "torch": torch.__version__, "weights": args.weights}

    def save(**values: Any) -> None:
        record.update(values)
        args.out.write_text(json.dumps(record, indent=2))
        print(json.dumps(values), flush=True)

    args.work.mkdir(parents=True, exist_ok=True)
    module = DenoiseStep(editor).eval()
    inputs = step_inputs(editor, args.views, args.size)
    with torch.no_grad():
        reference = module(*inputs)
        save(eager_step_ms=median_ms(lambda: module(*inputs)))
        t0 = time.perf_counter()
        exported = torch.export.export(module, inputs)
        save(export_s=time.perf_counter() - t0)
    options = {"aot_inductor.package_constants_in_so": args.weights == "inside"}
    t0 = time.perf_counter()
    package = torch._inductor.aoti_compile_and_package(
        exported, package_path=str(args.work / "step.pt2"), inductor_configs=options
    )
    save(package_build_s=time.perf_counter() - t0, package_mib=Path(package).stat().st_size / 2**20)
    torch.save(inputs, args.work / "inputs.pt")
    torch.save(reference, args.work / "reference.pt")
    modes = ["inside"] if args.weights == "inside" else ["user", "copy"]
    if args.weights == "outside":  # all the module's tensors; each load picks the ones its package names
        tensors = {**dict(module.named_parameters()), **dict(module.named_buffers())}
        torch.save({fqn: tensor.detach().cpu() for fqn, tensor in tensors.items()}, args.work / "weights.pt")
    loads: dict[str, list[Any]] = {}
    for mode in modes:
        for _ in range(2):  # the second load finds the package in the page cache, as a later run would
            load = load_in_fresh_process(package, args.work, mode, device, args.load_timeout)
            loads.setdefault(mode, []).append(load)
            save(fresh_process_loads=loads)


def load_in_fresh_process(package: str, work: Path, mode: str, device: str, timeout: float) -> dict[str, Any]:
    """`LOAD_IN_FRESH_PROCESS`'s figures, or how it failed (a crash prints its Python stack: faulthandler)."""
    command = [sys.executable, "-X", "faulthandler", "-c", LOAD_IN_FRESH_PROCESS, package, str(work), mode, device]
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"timed_out_s": timeout}
    if out.returncode != 0:
        return {"exit_code": out.returncode, "stderr_tail": out.stderr[-2000:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
