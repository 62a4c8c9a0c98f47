"""Where a fresh process's time goes before its compiled InstructPix2Pix edits at full speed (saved pieces).

Builds the editor as a compiling edit process does (`--pipeline.ip2p-compile True`, saved pieces on), then times
each phase on the GPU: imports, loading the model, the first warm-up edit (which loads or compiles and saves the
pieces), and a second edit. Run it twice with the same `--cache`: the first run compiles and saves the pieces, the
second loads them. `--profile FILE` writes the first edit's cProfile (slowest first, cumulative) to FILE.

    python benchmarks/probe_saved_first_call.py --ip2p-model /tmp/ip2p-arch --cache /tmp/probe-cache
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import sys
import time
from pathlib import Path

STARTED = time.perf_counter()


def write_profile(profiler: cProfile.Profile, path: Path) -> None:
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(45)
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(20)
    path.write_text(text.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ip2p-model", required=True)
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--profile", type=Path, default=None)
    parser.add_argument("--profile-build", type=Path, default=None, help="the editor's build under cProfile, to FILE")
    parser.add_argument("--device", default="cuda:0", help="cpu only checks the script (nothing compiles there)")
    parser.add_argument(
        "--scale-rblock",
        action="store_true",
        help="inductor's default dynamic_scale_rblock (before 2026-11-27)",
    )
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    phases: dict[str, float] = {}

    def mark(name: str, since: float) -> float:
        now = time.perf_counter()
        phases[name] = round(now - since, 2)
        return now

    t = STARTED
    import torch

    t = mark("import_torch_s", t)
    import diffusers  # noqa: F401
    import transformers  # noqa: F401

    from igs2gs import saved_compile
    from igs2gs.editor import EditSettings
    from igs2gs.editor_options import EditorOptions
    from igs2gs.editor_warm_up import warm_up_edit
    from igs2gs.fast_edits import build_ip2p_editor

    if args.scale_rblock:  # the baseline of saved_compile.INDUCTOR_OPTIONS (a key of its own)
        saved_compile.INDUCTOR_OPTIONS = {}

    t = mark("import_diffusers_igs2gs_s", t)
    options = EditorOptions(
        ip2p_model=args.ip2p_model,
        ip2p_use_full_precision=False,
        ip2p_memory_savers=False,
        ip2p_fast_kernels=True,
        ip2p_compile=True,
        ip2p_cuda_graphs=False,
        ip2p_compile_cache=args.cache,
        ip2p_compile_saved=True,
        edit_batch_size=args.batch,
        edit_max_side=512,
    )
    cuda = torch.device(args.device).type == "cuda"
    if cuda:
        torch.cuda.set_device(torch.device(args.device))  # as the edit process does
    builder = cProfile.Profile() if args.profile_build else None
    if builder:
        builder.enable()
    editor = build_ip2p_editor(options, args.device)
    if builder:
        builder.disable()
        write_profile(builder, args.profile_build)
    if cuda:
        torch.cuda.synchronize()
    t = mark("build_s", t)
    settings = EditSettings(prompt="turn the bear into a panda")
    size = (args.size, args.size)
    profiler = cProfile.Profile() if args.profile else None
    if profiler:
        profiler.enable()
    warm_up_edit(editor, size, args.batch, settings, args.device)
    if profiler:
        profiler.disable()
    t = mark("first_edit_s", t)
    editor.stop_compiling()
    warm_up_edit(editor, size, args.batch, settings, args.device)
    mark("second_edit_s", t)
    report = editor.saved_compile_report() or ""
    if profiler:
        write_profile(profiler, args.profile)
    print(json.dumps({**phases, "total_s": round(time.perf_counter() - STARTED, 2), "report": report}))


if __name__ == "__main__":
    main()
