"""How long a fresh process takes to have InstructPix2Pix on the GPU, and where that time goes.

`igs2gs.ip2p.load_ip2p_editor` runs in a fresh process (as in the edit process's children), --repeats times; each
prints one JSON line: the imports of torch and of diffusers and transformers, CUDA's start, the load, and the total
since the process began. (Loading straight onto the GPU with diffusers' `device_map` was measured as no faster:
benchmarks/RESULTS.md.)

    python benchmarks/probe_load.py --ip2p-model DIR [--device cuda] [--repeats 2] [--out FILE]
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def child(model: str, device: str) -> None:
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
    editor = load_ip2p_editor(model, device)
    synchronize(device)
    times["load_s"] = time.perf_counter() - t
    on_device = all(p.device.type == editor.device.type for p in editor.unet.parameters())
    times["total_s"] = time.perf_counter() - STARTED
    print(json.dumps({**times, "on_device": on_device}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ip2p-model", required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", action="store_true")
    args = parser.parse_args()
    if args.child:
        child(args.ip2p_model, args.device)
        return
    records = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, __file__, "--child", "--ip2p-model", args.ip2p_model, "--device", args.device],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        record = json.loads(lines[-1]) if lines else {"error": done.stderr[-800:]}
        record["process_s"] = time.perf_counter() - started
        records.append(record)
        print(json.dumps(record), flush=True)
    if args.out:
        args.out.write_text(json.dumps(records, indent=2))


if __name__ == "__main__":
    main()
