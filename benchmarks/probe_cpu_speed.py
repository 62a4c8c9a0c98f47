"""Probe: how steady is this machine's CPU speed over a minute, with nothing else running?

A training step of splatfacto is bound by the CPU that launches its kernels (5-7 ms of launches and Python for a few
ms of GPU work), so e2e timings follow the speed of the CPU they got. This samples, once a second, the time per tiny
CUDA launch and per thousand Python loop iterations (probe_leftovers.py's measures) and prints their spread.

    python benchmarks/probe_cpu_speed.py [--seconds 60] [--out probe_cpu_speed.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from probe_leftovers import launch_us, python_us


def spread(samples: list[float]) -> dict[str, float]:
    """Minimum, median and maximum of `samples`, and the maximum over the minimum."""
    low, high = min(samples), max(samples)
    return {
        "min": round(low, 2),
        "median": round(statistics.median(samples), 2),
        "max": round(high, 2),
        "max_over_min": round(high / low, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--out", type=Path, default=Path("probe_cpu_speed.json"))
    args = parser.parse_args()
    launches, loops = [], []
    ends = time.perf_counter() + args.seconds
    while time.perf_counter() < ends:
        launches.append(launch_us(5000))
        loops.append(python_us(500_000))
        time.sleep(max(0.0, 1.0 - 0.001 * (launches[-1] * 5 + loops[-1] * 0.5)))
    result = {
        "samples": len(launches),
        "launch_us": spread(launches),
        "python_us_per_1k": spread(loops),
        "launch_us_series": [round(x, 2) for x in launches],
    }
    print(json.dumps(result), flush=True)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
