"""Build the 2D editor before training starts, and compile it there with one warm-up edit.

A CUDA training run loads InstructPix2Pix (about 2 GB of weights onto the GPU) when the pipeline is built, and
with `--pipeline.ip2p-compile` edits one batch of grey images of the round's size there, which compiles the
editor (`ip2p_speed.CompiledThenRunOnly`). A missing or broken model fails the run at start-up instead of at
its first round. An editor whose compiled pieces are kept whole for later runs (saved_compile.py) and not saved yet
is not compiled here: a child process compiles it while the run edits uncompiled (background_compile.py).

This happens on the main thread, before the viewer and the edit worker start, on purpose: loading and
compiling change process-wide state that other threads' work runs into. transformers sets torch's default
dtype to float16 while it builds the text encoder (a training step's new tensors then come out float16),
accelerate patches `nn.Module.register_parameter` to build models on the meta device, and torch.compile's
tracing patches every module call. A thread that loaded the editor while the trainer set up made gsplat fail
with "expected scalar type Float but found Half" (H200, bench_e2e.py), and one that compiled broke
splatfacto's compiled `get_viewmat` ("using FX to symbolically trace a dynamo-optimized function").

A later run whose compiled pieces were all kept whole (saved_compile.py) skips the warm-up: the pieces load at their
first call, in the first round's edits. Loading them builds no module and traces nothing, so it meets none of those
hazards, and training starts 5-6 s sooner.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Sequence, Tuple

import torch

from igs2gs.editor import EditSettings, ImageEditor

WARM_UP_STEPS = 2
"""Denoising steps of a warm-up edit. Every step calls the compiled step with inputs of the same shapes, so two
steps meet what all of an edit's steps meet (the first step's inputs and those a step's own output gives the next);
the other 18 of the default 20 would only add GPU time beside the edits that already run (about 1 s for 8 views on an
H200)."""

EAGER_WARM_UP_STEPS = 1
"""Denoising steps of an eager editor's warm-up edit (`warm_up_editor`): one step meets every kernel of an edit."""


def builds_editor_ahead(editor_device: Any) -> bool:
    """Whether a training run builds its editor before training: on CUDA devices. On the CPU the editor is
    built at the first edit (there is no kernel choice or compilation to do ahead)."""
    return torch.device(editor_device).type == "cuda"


def warm_up_edit(
    editor: ImageEditor, size: Tuple[int, int], batch_size: int, settings: EditSettings, device: Any
) -> None:
    """One edit of `batch_size` grey images of `size` (height, width) on `device`, called as a round's edits
    call the editor (one CPU generator per view in a batch)."""
    images = torch.full((batch_size, 3, *size), 0.5, device=device)
    generators = [torch.Generator("cpu").manual_seed(i) for i in range(batch_size)]
    with torch.no_grad():
        editor.edit(images, images, settings, generator=generators if batch_size > 1 else generators[0])
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def warm_up_editor(
    editor: ImageEditor,
    sizes: Sequence[Tuple[int, int]],
    batch_size: int,
    settings: EditSettings,
    device: Any,
    eager: bool = False,
    defer_saved: bool = False,
) -> bool:
    """For an editor that compiles (its `compiling` is true): `warm_up_edit` at each edit size, with
    `WARM_UP_STEPS` denoising steps, then `stop_compiling`, so inputs it did not meet here run eagerly later
    (ip2p_speed.CompiledThenRunOnly). The compiled pieces it met, when all were kept whole (saved_compile.py), are
    recorded for later runs.

    With `defer_saved`, an editor whose pieces for this plan an earlier run recorded is not warmed up: it stops
    compiling at once, and each piece loads at its first call, in the first round's edits, while training goes on
    (loading traces nothing, so it may run beside other threads; a one-GPU run's start-up spent 5-6 s loading and
    first-calling them on an H200). Returns whether the warm-up was deferred so.

    An eager editor is warmed up only with `eager`, with `EAGER_WARM_UP_STEPS`: its first edit in a fresh process
    loads the kernels cuDNN and cuBLAS pick (8 views at 512 px on an H200: 6.3 s, against 1.7 s for the same call
    later). An edit process asks for that (edit_process.py): its editor waits for the first batch anyway while the
    training process starts. The training process's own editor is not warmed up: there the first edit runs beside
    training, while a warm-up would add to the start-up of every run."""
    compiling = getattr(editor, "compiling", False)
    if not (compiling or eager):
        return False
    if compiling and defer_saved and getattr(editor, "saved_plan_ready", lambda *_: False)(sizes, batch_size):
        editor.stop_compiling()
        _log("igs2gs: the compiled editor's saved pieces load in the first edits, while training goes on")
        editor.after_next_edit = lambda: _log_saved_compile_report(editor)
        return True
    steps = WARM_UP_STEPS if compiling else EAGER_WARM_UP_STEPS
    settings = replace(settings, diffusion_steps=min(settings.diffusion_steps, steps))
    for size in sizes:
        warm_up_edit(editor, size, batch_size, settings, device)
    if not compiling:
        return False
    editor.stop_compiling()
    getattr(editor, "record_saved_plan", lambda *_: False)(sizes, batch_size)
    _log_saved_compile_report(editor)
    return False


def _log_saved_compile_report(editor: ImageEditor) -> None:
    report = getattr(editor, "saved_compile_report", lambda: None)()
    if report:
        _log(report)


def _log(message: str) -> None:
    from nerfstudio.utils.rich_utils import CONSOLE  # here: an edit process imports no more than it needs

    CONSOLE.log(message)
