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


def main() -> None:
    import torch

    state("import torch")
    import benchmarks.e2e_common  # noqa: F401

    state("import benchmarks.e2e_common")
    from igs2gs.igs2gs_config import igs2gs_method  # noqa: F401

    state("import igs2gs.igs2gs_config")
    from nerfstudio.configs.method_configs import all_methods  # noqa: F401

    state("nerfstudio's method configs")
    print("device_count", torch.cuda.device_count(), flush=True)
    state("torch.cuda.device_count()")
    import nerfstudio.models.splatfacto  # noqa: F401

    state("import nerfstudio.models.splatfacto")
    try:
        import gsplat.cuda._backend  # noqa: F401
    except Exception as error:  # noqa: BLE001 - a machine without its build (the CPU here): go on
        print(f"gsplat's CUDA backend did not load: {type(error).__name__}", flush=True)
    state("import gsplat.cuda._backend")
    from nerfstudio.engine.trainer import Trainer  # noqa: F401
    from nerfstudio.viewer.viewer import Viewer  # noqa: F401

    state("import the trainer and the viewer")
    torch.manual_seed(0)
    state("torch.manual_seed (nerfstudio's train_loop)")
    from torch.amp.grad_scaler import GradScaler

    GradScaler("cuda", enabled=False)
    state("GradScaler(enabled=False) (the trainer)")


if __name__ == "__main__":
    main()
