"""Where, on the way to the pipeline, a training process initialises the CUDA driver or starts a thread: either
keeps its edit processes from being forked instead of spawned (a forked child cannot use CUDA once the parent called
`cuInit`; a fork copies only the calling thread). Prints one line per stage of `benchmarks/bench_e2e.py`'s and
`ns-train`'s way in (benchmarks/RESULTS.md, "Thirtieth session").

    python benchmarks/probe_fork_start.py
"""

from __future__ import annotations

import ctypes
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def cuda_driver_initialized() -> str:
    """Whether this process has called `cuInit` ("?" without a CUDA driver library): the driver answers
    CUDA_ERROR_NOT_INITIALIZED (3) before it."""
    try:
        status = ctypes.CDLL("libcuda.so.1").cuCtxGetCurrent(ctypes.byref(ctypes.c_void_p()))
    except OSError:
        return "?"
    return str(status != 3)


def state(stage: str) -> None:
    import torch

    threads = [thread.name for thread in threading.enumerate()]
    print(
        f"{stage:45s} driver initialised {cuda_driver_initialized():5s} torch initialised "
        f"{torch.cuda.is_initialized()!s:5s} threads {threads}",
        flush=True,
    )


STAGES = (
    "torch._dynamo",
    "torch._inductor.compile_fx",  # what a torch.compile decorator imports (splatfacto's, at its import)
    "triton",
    "gsplat",
    "gsplat.cuda._backend",
    "nerfstudio.models.splatfacto",
    "nerfstudio.engine.trainer",
    "nerfstudio.viewer.viewer",
    "igs2gs.igs2gs_config",  # the plugin
    "nerfstudio.configs.method_configs",  # ns-train's own import (it finds the plugin through its entry point)
)
"""Modules imported one after the other, in the order `ns-train` meets them, each after those before it. The
plugin's CPU fallback asks `torch.cuda.is_available()` at its import: here it asks NVML instead
(PYTORCH_NVML_BASED_CUDA_CHECK), so that a stage that initialises the driver is one of the others."""


def main() -> None:
    import importlib
    import os

    os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "1"
    import torch

    state("import torch")
    import benchmarks.e2e_common  # noqa: F401

    state("import benchmarks.e2e_common")
    print("device_count", torch.cuda.device_count(), flush=True)
    state("torch.cuda.device_count() (NVML)")
    for module in STAGES:
        try:
            importlib.import_module(module)
        except Exception as error:  # noqa: BLE001 - e.g. gsplat's CUDA build on a machine without CUDA: go on
            print(f"{module} did not import: {type(error).__name__}", flush=True)
        state(f"import {module}")
    torch.manual_seed(0)
    state("torch.manual_seed (nerfstudio's train_loop)")
    from torch.amp.grad_scaler import GradScaler

    GradScaler("cuda", enabled=False)
    state("GradScaler(enabled=False) (the trainer)")
    del os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"]
    torch.cuda.is_available()
    state("torch.cuda.is_available() (cudaGetDeviceCount)")


if __name__ == "__main__":
    main()
