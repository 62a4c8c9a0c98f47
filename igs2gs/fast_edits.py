"""Fast dataset-update rounds: several views per editor call, and the editor's speed switches.

`BatchedEdits` edits the next `edit_batch_size` views of a round in one editor call, when the round
reaches the first of them: their renders all come from the splat state of that step (the paper
renders each view at its own step), each view keeps its own seed (the one it would get at its own
step) and therefore its own T and noise. The prepared edits are handed out as the round reaches
their views, so training still sees view k at the round's k-th step. With a batch size of 1 every
view is rendered and edited at its own step, as in the paper.

`configure_editor` applies the pipeline config's speed switches to an `InstructPix2PixEditor`.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

import torch
from nerfstudio.utils.rich_utils import CONSOLE

from igs2gs.edit_sizes import edit_resolution, resize

if TYPE_CHECKING:
    from igs2gs.igs2gs_pipeline import IGS2GSPipeline


def accepts_view_ids(editor: Any) -> bool:
    """Whether `editor.edit` takes `view_ids` (InstructPix2PixEditor caches condition latents by them)."""
    try:
        return "view_ids" in inspect.signature(editor.edit).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return False


@contextlib.contextmanager
def _without_strategy_hooks(model: Any) -> Iterator[None]:
    """Render for an edit inside a training step: splatfacto's forward would hand the render's 2D means to the
    densification strategy (`step_pre_backward`, which needs gradients) and keep its `info` for the step's
    backward pass; both must stay those of the step's own training render."""
    info = getattr(model, "info", None)
    model.strategy.step_pre_backward = lambda *args, **kwargs: None  # instance attribute shadows the method
    try:
        yield
    finally:
        del model.strategy.step_pre_backward
        model.info = info


@torch.no_grad()
def render_for_edit(pipeline: IGS2GSPipeline, idx: int) -> torch.Tensor:  # [H, W, 3]
    """The current training-mode render of view `idx` (as the training step renders it), without gradients."""
    camera, _ = pipeline.datamanager.next_train_idx(idx)
    with _without_strategy_hooks(pipeline.model):
        return pipeline.model.get_outputs(camera)["rgb"]


class BatchedEdits:
    """Edits of a round, `batch_size` views per editor call (see the module docstring)."""

    def __init__(self) -> None:
        self._prepared: Dict[int, Tuple[Tuple[int, Tuple[int, int]], torch.Tensor]] = {}
        self._view_ids: Optional[bool] = None

    def clear(self) -> None:
        """Forget prepared edits (a new round renders its views afresh)."""
        self._prepared.clear()

    def edit(
        self,
        pipeline: IGS2GSPipeline,
        idx: int,
        step: int,
        render: torch.Tensor,  # [H, W, 3] the training render of view idx at this step
        edit_size: Tuple[int, int],
        batch_size: int,
    ) -> torch.Tensor:  # [1, 3, h, w] the edit of view idx at edit_size
        """The edit of view `idx`: prepared by an earlier call of this round, or made now with the next views."""
        from igs2gs.igs2gs_pipeline import edit_seed

        key = (pipeline.edit_round.rounds_started, tuple(edit_size))
        prepared = self._prepared.pop(idx, None)
        if prepared is not None and prepared[0] == key:
            return prepared[1]
        views = self._batch_views(pipeline, idx, tuple(render.shape[:2]), batch_size)
        renders = [render.detach()] + [render_for_edit(pipeline, v) for v in views[1:]]
        images = torch.cat([_to_edit(r, edit_size) for r in renders])
        device = render.device
        originals = torch.cat([_to_edit(pipeline.datamanager.original_image(v).to(device), edit_size) for v in views])
        # Each view's seed is the one of the step the round reaches it at, as if it were edited there.
        seed = pipeline.config.seed
        generators = [torch.Generator("cpu").manual_seed(edit_seed(seed, step + j)) for j in range(len(views))]
        kwargs: Dict[str, Any] = {"generator": generators}
        if self._view_ids is None:
            self._view_ids = accepts_view_ids(pipeline.editor)
        if self._view_ids:
            kwargs["view_ids"] = views
        edited = pipeline.editor.edit(images, originals, pipeline.edit_settings(), **kwargs)
        for j, view in enumerate(views[1:], start=1):
            self._prepared[view] = (key, edited[j : j + 1])
        return edited[:1]

    @staticmethod
    def _batch_views(pipeline: IGS2GSPipeline, idx: int, size: Tuple[int, int], batch_size: int) -> List[int]:
        """View idx and the round's next views up to batch_size, stopping at the first one of another size."""
        views = [idx]
        cache = pipeline.datamanager.cached_train
        for view in range(idx + 1, min(idx + max(1, batch_size), pipeline.datamanager.num_train_views)):
            if tuple(cache[view]["image"].shape[:2]) != size:
                break
            views.append(view)
        return views


def _to_edit(image: torch.Tensor, edit_size: Tuple[int, int]) -> torch.Tensor:  # [H, W, 3] -> [1, 3, h, w]
    """An image as the editor takes it, resized to the edit size."""
    return resize(image.permute(2, 0, 1)[None].float(), edit_size)


def build_ip2p_editor(config: Any, device: Any) -> Any:
    """Load InstructPix2Pix as the pipeline config (`IGS2GSPipelineConfig`, or its `EditorOptions`) asks, on `device`,
    with its switches."""
    from igs2gs.ip2p import load_ip2p_editor

    CONSOLE.log(f"igs2gs: loading InstructPix2Pix ({config.ip2p_model}) on {device}")
    editor = load_ip2p_editor(config.ip2p_model, device=device, full_precision=config.ip2p_use_full_precision)
    configure_editor(editor, config)
    return editor


def first_edit_side(size: Tuple[int, int], edit_max_side: int) -> int:
    """The longer side an edit of a view of `size` is tried at first (`edit_max_side`, 0: full size)."""
    return min(edit_max_side or max(size), max(size))


def edit_job_batch(
    editor: Callable[[], Any], guard: Any, jobs: List[Any], edit_max_side: int
) -> List[Optional[torch.Tensor]]:
    """The guarded edit (`EditGuard.run`) of background edit jobs (`EditJob`), those of one image size in one editor
    call: one [1, 3, h, w] image per job, or None for each job of a batch the guard discarded. `editor()` gives the
    editor inside the guard, so an editor that fails to load stops the run with the guard's message."""
    size = tuple(jobs[0].render.shape[-2:])
    if any(tuple(job.render.shape[-2:]) != size for job in jobs):
        return [image for job in jobs for image in edit_job_batch(editor, guard, [job], edit_max_side)]

    def edit_at(max_side: int) -> torch.Tensor:
        edit_size = edit_resolution(*size, max_side=max_side)
        renders = torch.cat([resize(job.render, edit_size) for job in jobs])
        originals = torch.cat([resize(job.original, edit_size) for job in jobs])
        generators = [torch.Generator("cpu").manual_seed(job.seed) for job in jobs]
        kwargs = {"view_ids": [job.view for job in jobs]} if accepts_view_ids(editor()) else {}
        generator = generators if len(jobs) > 1 else generators[0]
        return editor().edit(renders, originals, jobs[0].settings, generator=generator, **kwargs)

    edited = guard.run(jobs[0].view, edit_at, first_edit_side(size, edit_max_side))
    return [None] * len(jobs) if edited is None else list(edited.split(1))


def configure_editor(editor: Any, config: Any) -> None:
    """Apply the pipeline config's editor switches (`IGS2GSPipelineConfig.ip2p_*`) to an InstructPix2PixEditor."""
    if config.ip2p_memory_savers:
        CONSOLE.log("igs2gs: InstructPix2Pix with the original's memory savers (model CPU offload, attention slicing)")
        editor.enable_attention_slicing()
        editor.enable_model_cpu_offload()
        return
    if config.edit_batch_size > 1:
        editor.enable_vae_slicing()  # one image per VAE call: the same result, a fraction of the memory
    if editor.device.type != "cuda":
        if config.ip2p_compile or config.ip2p_cuda_graphs:
            CONSOLE.log(f"igs2gs: InstructPix2Pix runs on {editor.device}: overriding ip2p_compile to False")
        return
    if config.ip2p_fast_kernels:  # compile: the configuration measured with it (channels-last, torch's GroupNorm)
        editor.enable_fast_kernels(channels_last=config.ip2p_compile, group_norm=not config.ip2p_compile)
    if config.ip2p_compile:
        editor.enable_compile(
            cuda_graphs=config.ip2p_cuda_graphs, cache_dir=config.ip2p_compile_cache, saved=config.ip2p_compile_saved
        )
        editor.pad_views_to = config.edit_batch_size  # one compiled batch size, also for a round's last batch
