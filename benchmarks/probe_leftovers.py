"""Probe: does a spawned child that compiles with torch.compile leave processes behind that slow the CPU?

The edit process's children (edit_process.py) compile InstructPix2Pix with inductor, whose compile workers are
processes of their own. A multiprocessing child ends with `os._exit`, so inductor's atexit shutdown of those workers
never runs. This probe times CUDA launches and a Python loop in the parent, then for each way a child can end
(without and with `shutdown_compile_workers` before it returns) spawns a child that compiles a small model on CUDA,
lists the processes left once it is gone, and times the parent again. Prints one JSON line per phase.

    python benchmarks/probe_leftovers.py [--out probe_leftovers.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import subprocess
import tempfile
import time
from pathlib import Path


def launch_us(launches: int = 20000) -> float:
    """Microseconds per tiny CUDA kernel launch from this process (CPU-bound, as a training step's launches are)."""
    import torch

    x = torch.zeros(1, device="cuda")
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(launches):
        x.add_(1)
    torch.cuda.synchronize()
    return 1e6 * (time.perf_counter() - started) / launches


def python_us(iterations: int = 2_000_000) -> float:
    """Microseconds per thousand iterations of a pure-Python loop."""
    started = time.perf_counter()
    total = 0
    for i in range(iterations):
        total += i
    return 1e9 * (time.perf_counter() - started) / iterations


def compiling_child(shutdown: bool, cache_dir: str) -> None:
    """Compile a small convolutional model on CUDA (inductor, its compile workers), then return."""
    import os

    os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache_dir
    import torch

    model = torch.nn.Sequential(
        torch.nn.Conv2d(4, 32, 3, padding=1), torch.nn.GroupNorm(8, 32), torch.nn.SiLU(), torch.nn.Conv2d(32, 4, 1)
    ).cuda()
    compiled = torch.compile(model)
    with torch.no_grad():
        compiled(torch.randn(2, 4, 64, 64, device="cuda"))
    torch.cuda.synchronize()
    if shutdown:
        from torch._inductor.async_compile import shutdown_compile_workers

        shutdown_compile_workers()


def processes() -> list[str]:
    """This machine's Python processes other than the probe's parent: pid, parent, state, CPU %, age, command."""
    listing = subprocess.run(
        ["ps", "-eo", "pid,ppid,stat,pcpu,etimes,args", "--sort=-pcpu"], capture_output=True, text=True
    ).stdout.splitlines()
    return [line[:160] for line in listing[1:] if "python" in line and "probe_leftovers" not in line]


def busiest(seconds: float = 3.0) -> list[str]:
    """The processes' CPU share over the last `seconds` (top's second frame), busiest first."""
    frames = subprocess.run(
        ["top", "-b", "-c", "-n", "2", "-d", str(seconds), "-w", "180"], capture_output=True, text=True
    ).stdout.split("\ntop - ")
    return frames[-1].splitlines()[6:16]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("probe_leftovers.json"))
    args = parser.parse_args()
    phases = [{"phase": "before", "launch_us": launch_us(), "python_us_per_1k": python_us(), "busiest": busiest()}]
    print(json.dumps(phases[-1]), flush=True)
    context = mp.get_context("spawn")
    for shutdown in (False, True):
        with tempfile.TemporaryDirectory() as cache_dir:
            child = context.Process(target=compiling_child, args=(shutdown, cache_dir), daemon=True)
            started = time.perf_counter()
            child.start()
            child.join()
            child_s = time.perf_counter() - started
        time.sleep(5)
        left = processes()
        phases.append(
            {
                "phase": f"after a child that {'shut its compile workers down' if shutdown else 'just returned'}",
                "child_exit": child.exitcode,
                "child_s": round(child_s, 1),
                "compile_worker_processes": sum("compile_worker" in line for line in left),
                "launch_us": launch_us(),
                "python_us_per_1k": python_us(),
                "busiest": busiest(),
                "python_processes": left[:12],
            }
        )
        print(json.dumps(phases[-1]), flush=True)
    args.out.write_text(json.dumps(phases, indent=1))


if __name__ == "__main__":
    main()
