"""How long a fresh process takes to have InstructPix2Pix on the GPU, and where that time goes.

Each way of loading runs in a fresh process (as the edit process's children do), alternating, --repeats times:
  - `current`: `igs2gs.ip2p.load_ip2p_editor` (from_pretrained on the CPU, then moved to the GPU)
  - `device-map`: from_pretrained(..., device_map=DEVICE) for UNet, VAE and text encoder: safetensors read straight
    onto the GPU, then the same editor
  - `device-map-parallel`: the same with diffusers' parallel shard loading (HF_ENABLE_PARALLEL_LOADING=yes)
Each prints one JSON line: import and CUDA start-up times, the load, and the total since the process began.

    python benchmarks/probe_load.py --ip2p-model DIR [--device cuda] [--repeats 2] [--out FILE]
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
WAYS = ("current", "device-map", "device-map-parallel")


def load_with_device_map(model: str, device: str):  # noqa: ANN201 - an InstructPix2PixEditor
    """The components read straight onto `device`, then the editor `load_ip2p_editor` would build."""
    import diffusers
    import torch
    import transformers

    from igs2gs.ip2p import InstructPix2PixEditor

    dtype = torch.float16
    parts = {
        "unet": diffusers.UNet2DConditionModel.from_pretrained(model, subfolder="unet", dtype=dtype, device_map=device),
        "vae": diffusers.AutoencoderKL.from_pretrained(model, subfolder="vae", dtype=dtype, device_map=device),
        "text_encoder": transformers.CLIPTextModel.from_pretrained(
            model, subfolder="text_encoder", dtype=dtype, device_map=device
        ),
        "tokenizer": transformers.CLIPTokenizer.from_pretrained(model, subfolder="tokenizer"),
        "scheduler": diffusers.DDIMScheduler.from_config(
            diffusers.DDIMScheduler.load_config(model, subfolder="scheduler")
        ),
    }
    return InstructPix2PixEditor(**parts, device=torch.device(device), dtype=dtype)


def synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def child(way: str, model: str, device: str) -> None:
    times: dict[str, float] = {}
    t = time.perf_counter()
    import torch

    times["import_torch_s"] = time.perf_counter() - t
    t = time.perf_counter()
    import diffusers  # noqa: F401
    import transformers  # noqa: F401

    sys.path.insert(0, str(REPO))
    from igs2gs.ip2p import load_ip2p_editor

    times["import_diffusers_s"] = time.perf_counter() - t
    t = time.perf_counter()
    torch.zeros(1, device=device)
    synchronize(device)
    times["cuda_start_s"] = time.perf_counter() - t
    t = time.perf_counter()
    editor = load_ip2p_editor(model, device) if way == "current" else load_with_device_map(model, device)
    synchronize(device)
    times["load_s"] = time.perf_counter() - t
    on_device = all(p.device.type == editor.device.type for p in editor.unet.parameters())
    times["total_s"] = time.perf_counter() - STARTED
    print(json.dumps({"way": way, **times, "on_device": on_device}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ip2p-model", required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--ways", default=",".join(WAYS))
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", choices=WAYS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.ip2p_model, args.device)
        return
    records = []
    for _ in range(args.repeats):
        for way in args.ways.split(","):
            env = dict(os.environ)
            if way == "device-map-parallel":
                env["HF_ENABLE_PARALLEL_LOADING"] = "yes"
            started = time.perf_counter()
            done = subprocess.run(
                [sys.executable, __file__, "--child", way, "--ip2p-model", args.ip2p_model, "--device", args.device],
                env=env, capture_output=True, text=True, timeout=300,
            )  # fmt: skip
            lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
            record = json.loads(lines[-1]) if lines else {"way": way, "error": done.stderr[-800:]}
            record["process_s"] = time.perf_counter() - started
            records.append(record)
            print(json.dumps(record), flush=True)
    if args.out:
        args.out.write_text(json.dumps(records, indent=2))


if __name__ == "__main__":
    main()
