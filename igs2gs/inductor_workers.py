"""No pool of inductor compile workers in a process that compiles only nerfstudio's small graph.

torch.compile's inductor builds Triton kernels in a pool of worker processes, one per CPU core up to 32, which it
starts at the process's first compile. A training process that does not compile InstructPix2Pix itself compiles one
small graph, splatfacto's `get_viewmat`, at its first step, and got such a pool all the same (py-spy on a 2 x H200
machine, benchmarks/RESULTS.md): 32 processes started beside the run's start and the edit processes' loading, idle
for the rest of the run, and shut down at the process's exit, which waited 2.6 s for them. With one compile thread,
inductor compiles in the process itself and starts no pool.
"""

from __future__ import annotations


def compile_in_process() -> None:
    """Make this process's later torch.compile calls build their kernels in the process (no worker pool)."""
    from torch._inductor import config

    config.compile_threads = 1
