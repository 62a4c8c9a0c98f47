"""Where, on the way to the pipeline, a training process initialises the CUDA driver or starts a thread: either
keeps its edit processes from being forked instead of spawned (igs2gs/process_start.py). Prints one line per stage of
`benchmarks/bench_e2e.py`'s and `ns-train`'s way in: the imports, then (with --data) the trainer's set-up up to the
pipeline's first line, on a checkpoint of a few splatfacto steps made here. Every call of torch's Python functions
that initialise CUDA is printed with its caller's stack, and during the set-up a profile hook names the first
function after whose return the driver is initialised (benchmarks/RESULTS.md, "Thirtieth session" and after).

    python benchmarks/probe_fork_start.py [--data DATA/bear]

On a machine without network, --data needs LPIPS's backbone weights in place first (`python3 .gpu/random_backbones.py`
on the lent GPU machines, as benchmarks/gpu_issue3.sh does): the splatfacto run that makes the checkpoint loads them.
"""

from __future__ import annotations

import argparse
import sys
import threading
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from igs2gs.process_start import cuda_driver_initialised  # noqa: E402


def state(stage: str) -> None:
    import torch

    threads = [thread.name for thread in threading.enumerate()]
    print(
        f"{stage:45s} driver initialised {cuda_driver_initialised()!s:5s} torch initialised "
        f"{torch.cuda.is_initialized()!s:5s} threads {threads}",
        flush=True,
    )


def trap_cuda_entry_points() -> None:
    """Print the caller's stack at each call of torch's Python functions that initialise CUDA."""
    import torch

    def trapped(owner: object, name: str) -> None:
        original = getattr(owner, name)

        def call(*args: object, **kwargs: object) -> object:
            stack = "".join(traceback.format_stack(sys._getframe(1), limit=8))
            print(f"--- {name} called (driver initialised before: {cuda_driver_initialised()}):\n{stack}", flush=True)
            return original(*args, **kwargs)

        setattr(owner, name, call)

    for name in ("is_available", "_lazy_init", "init", "get_device_properties", "current_device", "synchronize"):
        trapped(torch.cuda, name)


class FirstInitialisation:
    """A profile hook: the first function (Python or C) after whose return the CUDA driver is initialised."""

    def __init__(self) -> None:
        self.found = False

    def __call__(self, frame: object, event: str, arg: object) -> None:
        if self.found or event not in ("return", "c_return") or not cuda_driver_initialised():
            return
        self.found = True
        sys.setprofile(None)
        what = getattr(arg, "__qualname__", arg) if event == "c_return" else frame.f_code.co_qualname
        stack = "".join(traceback.format_stack(frame, limit=14))
        print(f"--- the driver is initialised after {event} of {what}:\n{stack}", flush=True)


class PipelineReached(Exception):
    """Raised at the pipeline's first line: the probe stops there."""


def trainer_set_up(data: Path) -> None:
    """bench_e2e.py's trainer set-up on a checkpoint of a few splatfacto steps, up to the pipeline's first line
    (with the editor on a second GPU where there is one); state there."""
    import torch

    from benchmarks.e2e_common import igs2gs_trainer, make_checkpoint
    from igs2gs.igs2gs_pipeline import IGS2GSPipeline

    Path("/tmp/probe-fork").mkdir(parents=True, exist_ok=True)
    load_dir, _ = make_checkpoint(data, Path("/tmp/probe-fork/ckpt"), 30, Path("/tmp/probe-fork/splatfacto.log"))
    state("a splatfacto checkpoint made (in a child)")

    def reached(*args: object, **kwargs: object) -> None:
        sys.setprofile(None)
        state("the pipeline's first line")
        raise PipelineReached

    IGS2GSPipeline.__init__ = reached
    two = torch.cuda.device_count() > 1
    sys.setprofile(FirstInitialisation())
    try:
        igs2gs_trainer(
            data, load_dir, Path("/tmp/probe-fork/out"), "unused", **({"ip2p_device": "cuda:1"} if two else {})
        )
    except PipelineReached:
        pass
    finally:
        sys.setprofile(None)


STAGES = (
    "torch._dynamo",
    "torch._inductor.compile_fx",  # what a torch.compile decorator imports (splatfacto's, at its import)
    "triton",
    "gsplat",
    "nerfstudio.models.splatfacto",
    "nerfstudio.engine.trainer",
    "nerfstudio.viewer.viewer",
    "igs2gs.igs2gs_config",  # the plugin
    "nerfstudio.configs.method_configs",  # ns-train's own import (it finds the plugin through its entry point)
)
"""Modules imported one after the other, in the order `ns-train` meets them, each after those before it. Not gsplat's
CUDA backend: it imports torch.utils.cpp_extension, which asks `torch.cuda.is_available()` at its import (and so
initialises the driver); gsplat imports it at its first rasterization, after the pipeline is built."""


def main() -> None:
    import importlib

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="a nerfstudio scene: also probe the trainer's set-up")
    args = parser.parse_args()
    import torch

    state("import torch")
    trap_cuda_entry_points()
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
    if args.data is not None:
        trainer_set_up(args.data)


if __name__ == "__main__":
    main()
