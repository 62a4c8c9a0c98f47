"""Probe: InstructPix2Pix's denoising step compiled ahead of time with AOTInductor, and how fast it loads.

A run that finds its torch.compile'd editor in the compile cache still traces the model with dynamo and loads
the cached kernels: 9.5-18 s on an H200 (benchmarks/RESULTS.md), which keeps the compiled editor out of a
two-GPU run's first round. An AOTInductor package (torch.export + `aoti_compile_and_package`) loads without
tracing. This times, for the 8-view 512 px step of the compile configuration (channels-last, fused QKV, torch's
GroupNorm): export, package build, the package's load (in this process, then in fresh ones), and the step's median
and largest difference against eager.

With `--weights outside` (the default) the package holds no weights (`aot_inductor.package_constants_in_so`
False): the loaded step is handed the editor's own GPU tensors (`load_constants(user_managed=True)`), as an edit
process that has already loaded InstructPix2Pix would. A package with its weights inside (`--weights inside`) was
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
import sys, time
t0 = time.perf_counter()
import torch, torch._inductor
device = sys.argv[4]
if device == "cuda":
    torch.zeros(1, device="cuda")  # a CUDA context first: a load without one crashed (H200, torch 2.11)
t1 = time.perf_counter()
step = torch._inductor.aoti_load_package(sys.argv[1])
t2 = time.perf_counter()
weights = {}
if sys.argv[3] != "-":  # the weights, on the device (an edit process has them there already)
    weights = torch.load(sys.argv[3], map_location=device)
    t3 = time.perf_counter()
    step.load_constants(weights, check_full_update=True, user_managed=True)
else:
    t3 = time.perf_counter()
t4 = time.perf_counter()
args = torch.load(sys.argv[2], map_location=device)
step(*args)
if device == "cuda":
    torch.cuda.synchronize()
t5 = time.perf_counter()
print(f"{t1 - t0} {t2 - t1} {t3 - t2} {t4 - t3} {t5 - t4}")
"""
FRESH_PROCESS_TIMES = ("import_torch_s", "load_package_s", "read_weights_s", "load_constants_s", "first_step_s")


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


def step_constants(module: torch.nn.Module, fqns: list[str]) -> dict[str, torch.Tensor]:
    """The module's own tensors for the package's constants (named by their fully qualified names)."""
    tensors = {**dict(module.named_parameters()), **dict(module.named_buffers())}
    missing = [fqn for fqn in fqns if fqn not in tensors]
    if missing:
        raise KeyError(f"the package needs constants the module does not have: {missing[:5]}")
    return {fqn: tensors[fqn].detach() for fqn in fqns}


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

    t0 = time.perf_counter()
    loaded = torch._inductor.aoti_load_package(package)
    load_s = time.perf_counter() - t0
    weights_file = "-"
    if args.weights == "outside":
        constants = step_constants(module, loaded.get_constant_fqns())
        t0 = time.perf_counter()
        loaded.load_constants(constants, check_full_update=True, user_managed=True)
        save(in_process_load_s=load_s, load_constants_s=time.perf_counter() - t0, constants=len(constants))
        weights_file = str(args.work / "weights.pt")
        torch.save({fqn: tensor.cpu() for fqn, tensor in constants.items()}, weights_file)
    else:
        save(in_process_load_s=load_s)

    def step(*values: torch.Tensor) -> torch.Tensor:
        out = loaded(*values)
        return out[0] if isinstance(out, (list, tuple)) else out

    with torch.no_grad():
        diff = (step(*inputs) - reference).abs().max().item()
        save(aot_step_ms=median_ms(lambda: step(*inputs)), max_abs_diff_vs_eager=diff)
    loads: list[Any] = []
    for _ in range(2):  # the second load finds the package in the page cache, as a later run would
        command = [sys.executable, "-c", LOAD_IN_FRESH_PROCESS, package, str(args.work / "inputs.pt"), weights_file]
        try:
            out = subprocess.run(command + [device], capture_output=True, text=True, timeout=args.load_timeout)
        except subprocess.TimeoutExpired:
            loads.append({"timed_out_s": args.load_timeout})
        else:
            if out.returncode != 0:
                loads.append({"exit_code": out.returncode, "stderr_tail": out.stderr[-1500:]})
            else:
                times = map(float, out.stdout.split()[-len(FRESH_PROCESS_TIMES) :])
                loads.append(dict(zip(FRESH_PROCESS_TIMES, times)))
        save(fresh_process_loads=loads)


if __name__ == "__main__":
    main()
