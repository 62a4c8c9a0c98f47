"""Can this machine's torch confine a stream's kernels to a share of the GPU (a CUDA green context)?

Prints torch's green-context API, then times an 8192^3 float16 matrix product on an ordinary stream and on
streams made by `igs2gs.edit_streams.editing_stream` with a share of the multiprocessors. Exits 0 when the
smallest share is at least 4x slower (the partition holds), 1 otherwise. Writes a JSON record with --out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from igs2gs.edit_streams import editing_stream


def product_ms(stream: torch.cuda.Stream, a: torch.Tensor, repeats: int = 10) -> float:
    """Mean time of `a @ a` on `stream` over `repeats` calls, after one warm-up (ms)."""
    with torch.cuda.stream(stream):
        a @ a
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(repeats):
            a @ a
        end.record()
    end.synchronize()
    return start.elapsed_time(end) / repeats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    device = torch.device("cuda", 0)
    record: dict = {"torch": torch.__version__, "card": torch.cuda.get_device_name(device)}
    record["sms"] = torch.cuda.get_device_properties(device).multi_processor_count
    try:
        from torch.cuda.green_contexts import GreenContext

        record["api"] = sorted(name for name in dir(GreenContext) if not name.startswith("__"))
    except ImportError as err:
        record["api"] = f"none ({err})"
    print(record)
    a = torch.randn(8192, 8192, device=device, dtype=torch.float16)
    record["ms"] = {"all": product_ms(editing_stream(device), a)}
    for fraction in (0.88, 0.75, 1 / 16):
        record["ms"][f"{fraction:.3f}"] = product_ms(editing_stream(device, sm_fraction=fraction), a)
    print(record["ms"])
    holds = record["ms"][f"{1 / 16:.3f}"] > 4 * record["ms"]["all"]
    record["partition_holds"] = holds
    if args.out is not None:
        args.out.write_text(json.dumps(record, indent=1))
    print("partition holds" if holds else "partition does NOT hold")
    return 0 if holds else 1


if __name__ == "__main__":
    raise SystemExit(main())
