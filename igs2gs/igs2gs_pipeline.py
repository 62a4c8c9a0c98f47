"""The Instruct-GS2GS pipeline: dataset-update rounds that edit every training view, then plain training."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Dict, List, Literal, Mapping, Optional, Tuple, Type

import numpy as np
import torch
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig
from nerfstudio.utils.rich_utils import CONSOLE
from torch.cuda.amp.grad_scaler import GradScaler

from igs2gs.async_edits import AsyncRound, edits_in_background, edits_on_own_device, make_job
from igs2gs.background_compile import BackgroundCompile, compiles_aside, run_uncompiled
from igs2gs.checkpoint_checks import check_checkpoint_matches_scene
from igs2gs.edit_guard import EditGuard
from igs2gs.edit_lanes import helps_on
from igs2gs.edit_process import EditProcess, uncompiled
from igs2gs.edit_schedule import EditRound, starts_round
from igs2gs.edit_sizes import edit_resolution, resize
from igs2gs.edit_streams import prioritise_training
from igs2gs.edit_worker import EditJob, EditResult
from igs2gs.editor import EditSettings, ImageEditor
from igs2gs.editor_options import editor_options
from igs2gs.editor_warm_up import builds_editor_ahead, warm_up_editor
from igs2gs.fast_edits import BatchedEdits, build_ip2p_editor, edit_job_batch, first_edit_side
from igs2gs.igs2gs import IGS2GSModelConfig
from igs2gs.igs2gs_datamanager import EDIT_KEY_PREFIX, IGS2GSDataManager, IGS2GSDataManagerConfig
from igs2gs.inductor_workers import compile_in_process
from igs2gs.round_reporter import RoundReporter
from igs2gs.run_keeper import RunKeeper
from igs2gs.run_state import split_run_state
from igs2gs.validation import announce_input_warnings, check_pipeline_options
from igs2gs.viewer_controls import EditControls
from igs2gs.viser_icons import read_viser_icons_once

ROUND_KEY = "igs2gs_round"
"""Checkpoint key of the round state: int64 [active, cursor, rounds_started]."""


@dataclass
class IGS2GSPipelineConfig(VanillaPipelineConfig):
    """Instruct-GS2GS: edit each training view's render with InstructPix2Pix and train the splats on the edits."""

    _target: Type = field(default_factory=lambda: IGS2GSPipeline)
    datamanager: IGS2GSDataManagerConfig = field(default_factory=IGS2GSDataManagerConfig)
    """Datamanager that keeps the original photos beside the edited cache."""
    model: IGS2GSModelConfig = field(default_factory=IGS2GSModelConfig)
    """splatfacto with the L1 + LPIPS loss."""
    prompt: str = "don't change the image"
    """The edit instruction, e.g. "turn the bear into a panda" (quote it on the command line)."""
    guidance_scale: float = 12.5
    """Text guidance of InstructPix2Pix: how strongly the edit follows the prompt (> 0)."""
    image_guidance_scale: float = 1.5
    """Image guidance of InstructPix2Pix: how closely the edit keeps the original photo (> 0)."""
    gs_steps: int = 2500
    """A dataset-update round (every training view edited once, one view per step) starts at each step with
    (step - 1) % gs_steps == 0."""
    diffusion_steps: int = 20
    """DDIM denoising steps per edit."""
    lower_bound: float = 0.70
    """Lower bound of the noise level T of an edit, as a fraction of the 1,000 diffusion timesteps."""
    upper_bound: float = 0.98
    """Upper bound of the noise level T of an edit, as a fraction of the 1,000 diffusion timesteps."""
    ip2p_model: str = "timbrooks/instruct-pix2pix"
    """InstructPix2Pix weights: a Hugging Face hub id or a local diffusers folder."""
    ip2p_device: Optional[str] = None
    """Device of InstructPix2Pix, e.g. "cuda:1"; None uses the training device."""
    overlap_edits: bool = True
    """Edit in the background while the splats train, also on the training GPU: a worker thread runs InstructPix2Pix
    on a CUDA stream of its own while training keeps the default stream (igs2gs/async_edits.py). Training samples
    views from the newest cache during a round, and waits for a round's last edits when the next round is due or
    training ends, so every round still edits every view. Off (or on the CPU): training stops for each edit batch,
    and step k of a round trains on view k, as in the paper. With --pipeline.ip2p-device on another GPU, edits always
    run in the background."""
    training_stream_priority: bool = False
    """With overlap-edits on one GPU: train on a highest-priority CUDA stream, so that a training step's kernels go
    ahead of InstructPix2Pix's instead of waiting behind them. Measured on an H200 (default bear edit): no gain,
    133.2 s against 131.9 s, because the shared GPU is bound by its total work (edits + training), not by the order
    of its kernels; so it stays off. The run was clean since gsplat's SH kernels are ordered with the current stream
    (igs2gs/gsplat_streams.py)."""
    ip2p_use_full_precision: bool = False
    """Run InstructPix2Pix in float32 instead of float16 (about twice the memory and time)."""
    seed: int = 0
    """Seed of the edits' noise: the same seed, checkpoint and settings give the same edits."""
    edit_max_side: int = 512
    """Views are edited at most this many pixels on their longer side (InstructPix2Pix works best at about 512 px)
    and resized back; 0 edits at full size. Sides are also rounded down to multiples of 8 for the VAE."""
    edit_batch_size: int = 8
    """Views edited per InstructPix2Pix call in a round (igs2gs/fast_edits.py): the round's next views are rendered
    from the splat state of the step that reaches the first of them, each keeps the seed (so T and noise) of its own
    step, and training still takes view k at the round's k-th step. 1 renders and edits each view at its own step,
    as the paper does. Larger batches use the GPU better and need more memory."""
    ip2p_fast_kernels: bool = True
    """Fused QKV projections and GroupNorm statistics that use the whole GPU in InstructPix2Pix (CUDA; the same
    arithmetic up to rounding); with ip2p_compile, channels-last convolutions instead of the GroupNorm change."""
    ip2p_compile: bool = False
    """torch.compile InstructPix2Pix's denoising step and VAE (CUDA only). On an H200: 141 instead of 209-239 ms per
    512 px view alone, 0.15-0.16 instead of 0.24 s per view editing in the background on a second GPU. The compiled
    pieces are kept for later runs (ip2p_compile_saved): a later one-GPU run loads them in its first edits and took
    78-97 s against 95-113 s for the default on the same H200s. A run that finds none for its image size compiles
    outside its own work: on one GPU it edits uncompiled while a child process compiles for later runs
    (background_compile.py); with ip2p_process on a second GPU, a second edit process compiles and takes over from the
    next batch once done (edit_process.py). A run that ends first waits for that compile (Ctrl-C skips it). It stays
    off: the first run pays the compile, and a one-GPU one needs the child's GPU memory beside its own
    (benchmarks/RESULTS.md)."""
    ip2p_cuda_graphs: bool = False
    """Replay the compiled denoising step as a CUDA graph (pays where kernel launches dominate: small batches)."""
    ip2p_compile_cache: Optional[Path] = Path("~/.cache/igs2gs/torchinductor")
    """Folder of compiled kernels kept between runs (TORCHINDUCTOR_CACHE_DIR wins when set); None: torch's default."""
    ip2p_compile_saved: bool = True
    """With ip2p_compile: also keep each compiled piece whole in ip2p_compile_cache (dynamo's AOT compile,
    experimental in torch; igs2gs/saved_compile.py), so later runs load it instead of tracing the model again. On an
    H200 a later one-GPU run had InstructPix2Pix loaded and compiled in 14 s (25 s with torch.compile's warm cache on
    another H200), and a second GPU's edit process took the compiled editor over after 56 instead of 111 views (two
    2 x H200 machines; benchmarks/RESULTS.md). Anything that fails falls back to torch.compile alone, as False does."""
    ip2p_process: bool = True
    """With --pipeline.ip2p-device on another GPU: run InstructPix2Pix in a process of its own (igs2gs/edit_process.py)
    instead of a thread of the training process. It starts loading when the pipeline is built, with the editor's
    options only, and the two processes no longer take turns at one Python interpreter. Side by side on 2 x H200
    (default bear edit, benchmarks/RESULTS.md): 100.4 s against 109.8 s with the thread and 125.2 s on one GPU; in an
    earlier call 113.2 s against 122.3 s. False keeps the editor on a thread of the training process."""
    ip2p_helper: bool = False
    """With --pipeline.ip2p-device on another GPU and ip2p_process: while training waits for a round's last edits,
    a second, uncompiled InstructPix2Pix in a process of its own on the training GPU edits the batches it would finish
    no later than the editor's GPU (igs2gs/edit_lanes.py). Edits still land in view order, and a helper that fails
    hands its views back. Costs the training GPU about 4 GB, so it stays off. With the saved compiled editor on
    2 x H200 it halved the waits for rounds (6.3 against 11.3 s) and took 4.5 s off the training loop, with training
    steps as fast as without it (benchmarks/RESULTS.md). A helper that edited all along slowed the training steps
    beside it from 4.6 to 9.4 ms (two processes take turns on one GPU)."""
    ip2p_memory_savers: bool = False
    """The original code's InstructPix2Pix placement: model CPU offload and attention slicing. Saves about 2 GB of
    GPU memory; every edit then takes several times longer."""


class IGS2GSPipeline(VanillaPipeline):
    """Runs the dataset-update rounds; the editor is built before training on CUDA (at the first edit on the CPU),
    never for viewing or export."""

    config: IGS2GSPipelineConfig
    datamanager: IGS2GSDataManager
    process_editor_builder: Optional[Callable[[Any, Any], ImageEditor]] = None
    """With ip2p_process: a module-level function (config, device) -> editor that the edit process calls (it
    cannot call `build_editor`, a method of this process's pipeline); None loads InstructPix2Pix."""

    def __init__(
        self,
        config: IGS2GSPipelineConfig,
        device: str,
        test_mode: Literal["test", "val", "inference"] = "val",
        world_size: int = 1,
        local_rank: int = 0,
        grad_scaler: Optional[GradScaler] = None,
    ):
        read_viser_icons_once()  # before nerfstudio builds the viewer, in ns-train and ns-viewer (viser_icons.py)
        if test_mode == "val":  # only edits use these options; viewing and exporting never edit
            check_pipeline_options(config)
        background = test_mode == "val" and edits_in_background(device, config.ip2p_device, config.overlap_edits)
        if background and config.training_stream_priority and not edits_on_own_device(device, config.ip2p_device):
            prioritise_training(device)  # before the run's tensors are made (edit_streams.py)
        editor_device = config.ip2p_device or device
        own_process = background and config.ip2p_process and edits_on_own_device(device, config.ip2p_device)
        # InstructPix2Pix loads in its own process while this one caches the images and builds the model. The
        # processes start first, before anything initialises CUDA here, so that they can be forked (process_start.py).
        edit_process = self._start_edit_process(config, editor_device) if own_process else None
        helper_process = self._start_helper_process(config, device, own_process) if test_mode == "val" else None
        if not (test_mode == "val" and config.ip2p_compile and not own_process):
            compile_in_process()  # this process compiles no editor: no pool of compile workers (inductor_workers.py)
        super().__init__(config, device, test_mode, world_size, local_rank, grad_scaler)
        self.edit_process: Optional[EditProcess] = edit_process
        self.helper_process: Optional[EditProcess] = helper_process
        self.background_compile: Optional[BackgroundCompile] = None  # one GPU's first compile (background_compile.py)
        self.edit_round = EditRound()
        self.batched_edits = BatchedEdits()  # edits made ahead for the round's next views (edit_batch_size)
        self.edit_guard = EditGuard()  # NaN/inf edits, out of memory: one view never ends a run
        self.keeper = RunKeeper()  # resume state, the edits/ journal, the splats' health check
        # Rounds edit in the background while training goes on (async_edits.py).
        self.async_round = AsyncRound(config.edit_batch_size, editor_device) if background else None
        if test_mode == "val":
            announce_input_warnings(config, self.datamanager.train_dataset.cameras)
            # Before any other thread runs: the LPIPS loss's CUDA graphs (a capture must not overlap other threads'
            # CUDA work), then InstructPix2Pix and its warm-up edit (editor_warm_up.py says why not later).
            self._capture_graphs()
            if self.edit_process is not None:
                for process in filter(None, (self.edit_process, self.helper_process)):
                    process.plan(*self.warm_up_plan(), self.edit_settings())
            elif builds_editor_ahead(editor_device):
                plan = self.warm_up_plan()
                if compiles_aside(self.editor, *plan):  # this run edits uncompiled while a child compiles
                    self.background_compile = self._start_background_compile(config, editor_device, plan)
                    run_uncompiled(self.editor, config)
                    compile_in_process()
                elif warm_up_editor(self.editor, *plan, self.edit_settings(), editor_device, defer_saved=True):
                    compile_in_process()  # its saved pieces load without compiling: no pool of compile workers
        # Viewer controls (the attribute name is their folder in the viewer); none when viewing or exporting.
        self.igs2gs = EditControls(config) if test_mode == "val" else None
        self.round_reporter = RoundReporter(config.gs_steps, status=self.igs2gs.show_status if self.igs2gs else None)

    @classmethod
    def _start_edit_process(cls, config: IGS2GSPipelineConfig, editor_device: str) -> EditProcess:
        """The process that builds and runs the editor (edit_process.py); with ip2p_compile on CUDA, a second one
        compiles it meanwhile."""
        compile_ahead = config.ip2p_compile and torch.device(editor_device).type == "cuda"
        options = editor_options(config)  # not the config: unpickling that would import nerfstudio in the child
        return EditProcess(options, editor_device, compile_ahead=compile_ahead, builder=cls.process_editor_builder)

    def _start_background_compile(
        self, config: IGS2GSPipelineConfig, editor_device: str, plan: Tuple[List[Tuple[int, int]], int]
    ) -> BackgroundCompile:
        """The child that compiles the editor for later runs (background_compile.py)."""
        CONSOLE.log(
            "igs2gs: no earlier run compiled InstructPix2Pix for these images: this run edits uncompiled while a "
            "background process compiles it for later runs"
        )
        process = BackgroundCompile(editor_options(config), editor_device, builder=type(self).process_editor_builder)
        process.plan(*plan, self.edit_settings())
        return process

    @classmethod
    def _start_helper_process(
        cls, config: IGS2GSPipelineConfig, training_device: str, own_process: bool
    ) -> Optional[EditProcess]:
        """The helper editor's process on the training GPU (`ip2p_helper`), uncompiled; None when the run has none."""
        if not config.ip2p_helper:
            return None
        if not (own_process and helps_on(training_device)):
            CONSOLE.log(
                "igs2gs: --pipeline.ip2p-helper needs InstructPix2Pix on another GPU (--pipeline.ip2p-device) in a "
                "process of its own (--pipeline.ip2p-process) and a CUDA training device; this run has no helper"
            )
            return None
        options = uncompiled(editor_options(config))
        return EditProcess(options, training_device, builder=cls.process_editor_builder)

    @cached_property  # a cached property: the viewer reads every other public attribute and would build it
    def editor(self) -> ImageEditor:
        """The 2D editor: built with the pipeline on CUDA (editor_warm_up.py), at its first use on the CPU."""
        return self.build_editor()

    def build_editor(self) -> ImageEditor:
        """Load InstructPix2Pix; subclasses (tests, benchmarks) return another `ImageEditor`."""
        return build_ip2p_editor(self.config, self.config.ip2p_device or self.device)

    def warm_up_plan(self) -> Tuple[List[Tuple[int, int]], int]:
        """What the editor's warm-up edits (editor_warm_up.py): the edit sizes of the four most common training image
        sizes, and the round's batch size."""
        batch = max(1, min(self.config.edit_batch_size, self.datamanager.num_train_views))
        edit_sizes = [
            edit_resolution(h, w, max_side=self._first_edit_side((h, w)))
            for (h, w), _ in self._train_image_sizes().most_common(4)
        ]
        return edit_sizes, batch

    def edit_settings(self) -> EditSettings:
        """The edit parameters, read from the config at every edit."""
        c = self.config
        return EditSettings(
            prompt=c.prompt,
            guidance_scale=c.guidance_scale,
            image_guidance_scale=c.image_guidance_scale,
            diffusion_steps=c.diffusion_steps,
            lower_bound=c.lower_bound,
            upper_bound=c.upper_bound,
        )

    def state_dict(self, *args, **kwargs) -> Dict[str, Any]:
        """The model's state plus the edited images and the round state, so a resumed run loses no edit."""
        state = super().state_dict(*args, **kwargs)
        if self.test_mode == "val":
            state.update(self.datamanager.edits_state_dict())
            r = self.edit_round
            state[ROUND_KEY] = torch.tensor([int(r.active), r.cursor, r.rounds_started], dtype=torch.int64)
            state.update(self.keeper.state_dict(self))
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: Optional[bool] = None):
        if self.test_mode == "val":  # before loading, so another scene's checkpoint fails with a clear message
            check_checkpoint_matches_scene(state_dict, self.datamanager.num_train_views, EDIT_KEY_PREFIX)
        state_dict, run_state = split_run_state(state_dict)
        edits = {k: v for k, v in state_dict.items() if k.startswith(EDIT_KEY_PREFIX)}
        round_state = state_dict.get(ROUND_KEY)
        rest = {k: v for k, v in state_dict.items() if k not in edits and k != ROUND_KEY}
        super().load_state_dict(rest, strict=strict)
        if self.test_mode != "val":
            return  # viewing, rendering and exporting need only the splats
        self.datamanager.load_edits_state_dict(edits)
        if round_state is not None:
            active, cursor, rounds_started = (int(v) for v in round_state)
            self.edit_round = EditRound(active=bool(active), cursor=cursor, rounds_started=rounds_started)
        self.keeper.load_state_dict(run_state)
        if edits:
            CONSOLE.log(f"igs2gs: restored {len(edits)} edited views from the checkpoint")

    def load_pipeline(self, loaded_state: Dict[str, Any], step: int) -> None:
        self.keeper.loaded_step = step
        super().load_pipeline(loaded_state, step)

    def get_train_loss_dict(self, step: int):
        requested = self.igs2gs is not None and self.igs2gs.take_round_request()
        # A round begins once at its step, also when a resumed run trains that step again.
        begins = (starts_round(step, self.config.gs_steps) and step > self.keeper.state.round_start_step) or requested
        if begins and self.edit_round.active and self.async_round is not None:  # the previous round ends first
            self.async_round.complete(self, step, self.apply_async_edit)
        if begins:
            self.edit_round.begin()
            self.keeper.round_began(self, step)
            if self.async_round is not None:
                self.async_round.begin()
        if self.edit_round.active and self.async_round is not None:
            self.async_round.step(self, step, self.apply_async_edit)
            camera, data = self.datamanager.next_train(step)
            model_outputs = self._model(camera)
        elif self.edit_round.active:
            idx, views = self.edit_round.cursor, self.datamanager.num_train_views
            camera, data = self.datamanager.next_train_idx(idx)
            model_outputs = self._model(camera)
            started = time.perf_counter()
            data["image"] = self.edit_view(idx, model_outputs["rgb"], step)
            seconds = time.perf_counter() - started
            self.edit_round.advance(views)
            self.keeper.view_done(self, idx, step)
            self.round_reporter.view_edited(
                self.edit_round, views, idx, model_outputs["rgb"], data["image"], seconds, step
            )
        else:
            camera, data = self.datamanager.next_train(step)
            model_outputs = self._model(camera)
        metrics_dict = self.model.get_metrics_dict(model_outputs, data)
        loss_dict = self.model.get_loss_dict(model_outputs, data, metrics_dict)
        return model_outputs, loss_dict, metrics_dict

    def get_training_callbacks(self, training_callback_attributes: TrainingCallbackAttributes):
        trainer = training_callback_attributes.trainer
        if trainer is not None:  # the checkpoint is loaded by now: the run's steps are known ("round k of n")
            self.round_reporter.set_last_step(
                getattr(trainer, "_start_step", 0) + trainer.config.max_num_iterations - 1
            )
        callbacks = super().get_training_callbacks(training_callback_attributes)
        if self.test_mode == "val":  # after the model's callbacks, which re-bind the optimizers
            callbacks += self.keeper.start(self, training_callback_attributes)
        if self.async_round is not None or self.background_compile is not None:  # see _finish_async_edits
            self._trainer = training_callback_attributes.trainer  # its step count is read at every step
            callbacks.append(
                TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], self._finish_async_edits)
            )
        return callbacks

    def _train_image_sizes(self) -> Counter:
        """How many training images have each (height, width)."""
        return Counter(tuple(view["image"].shape[:2]) for view in self.datamanager.cached_train)

    def _capture_graphs(self) -> None:
        """The LPIPS loss's CUDA graphs, one per training image size; before any other thread does CUDA work."""
        capture = getattr(self.model, "capture_lpips_graphs", None)  # another model (e.g. splatfacto's) has none
        if capture is not None:
            capture(set(self._train_image_sizes()))

    def train(self, mode: bool = True):
        """nerfstudio's trainer sets the training mode of every module before each step (~1 ms of Python on a
        step of a few ms): skip that when the pipeline and its model are in that mode already."""
        if self.training == mode and self.model.training == mode:
            return self
        return super().train(mode)

    def _finish_async_edits(self, step: int) -> None:
        trainer = getattr(self, "_trainer", None)
        if trainer is None or step < trainer._start_step + trainer.config.max_num_iterations - 1:
            return
        if self.async_round is not None:
            self.async_round.finish(self, step, self.apply_async_edit)
        # Told to stop, not waited for: they exit while the trainer saves its last checkpoint (join_edit_processes).
        # A compile in progress may finish first: it fills the cache for later runs.
        for process in filter(None, (self.edit_process, self.background_compile)):
            process.stop(finish_compile=True)
        if self.helper_process is not None:
            self.helper_process.stop()

    def join_edit_processes(self) -> None:
        """Wait for the edit processes to exit (stopping them first if training did not reach its end); the trainer
        calls this once training is over and its last checkpoint saved."""
        for process in filter(None, (self.edit_process, self.helper_process, self.background_compile)):
            process.join()

    def make_edit_job(self, idx: int, step: int) -> EditJob:
        """A background edit of view `idx` from its current render, with the seed of the step the round would
        reach it at on one device (so both paths draw the same T and noise for a view)."""
        first_step = self.keeper.state.round_start_step
        return make_job(self, idx, step, seed=edit_seed(self.config.seed, first_step + idx))

    def edit_jobs(self, jobs: List[EditJob]) -> List[Optional[torch.Tensor]]:
        """Run on the edit worker's thread: the guarded edit of jobs of one image size in one editor call
        (one [1, 3, H, W] image per job; None for all when the guard discards the batch). With an edit process, the
        worker sends it the jobs instead (async_edits.py)."""
        return edit_job_batch(lambda: self.editor, self.edit_guard, jobs, self.config.edit_max_side)

    @torch.no_grad()
    def apply_async_edit(self, result: EditResult, step: int) -> None:
        """Write a finished background edit into the cache and move the round past its view."""
        if result.error is not None:  # the guard lets through only what must stop the run
            self.async_round.close()
            raise result.error
        idx, views = result.job.view, self.datamanager.num_train_views
        render = result.job.render
        if result.image is not None:
            self._store_edit(idx, result.image.to(render.device), tuple(render.shape[-2:]))
        self.edit_round.advance(views)
        self.keeper.view_done(self, idx, step, kept=result.image is not None)
        cached = self.datamanager.cached_train[idx]["image"][..., :3].to(render.device)
        self.round_reporter.view_edited(
            self.edit_round,
            views,
            idx,
            render[0].permute(1, 2, 0),
            cached,
            result.seconds,
            step,
            round_start_step=self.keeper.state.round_start_step,
            began_seconds_ago=result.batch_seconds,
        )

    @torch.no_grad()
    def edit_view(self, idx: int, render: torch.Tensor, step: int) -> torch.Tensor:
        """Edit the render [H, W, 3] of view `idx`, write it into the cache, return the cached image."""
        original = self.datamanager.original_image(idx).to(render.device)
        size = tuple(render.shape[:2])

        def edit_at(max_side: int) -> torch.Tensor:  # [1, 3, h, w] at most max_side px
            edit_size = edit_resolution(*size, max_side=max_side)
            if self.config.edit_batch_size > 1:  # with the round's next views, or prepared by an earlier batch
                return self.batched_edits.edit(self, idx, step, render, edit_size, self.config.edit_batch_size)
            renders = resize(render.detach().permute(2, 0, 1)[None].float(), edit_size)
            originals = resize(original.permute(2, 0, 1)[None].float(), edit_size)
            generator = torch.Generator("cpu").manual_seed(edit_seed(self.config.seed, step))
            return self.editor.edit(renders, originals, self.edit_settings(), generator=generator)

        edited = self.edit_guard.run(idx, edit_at, self._first_edit_side(size))
        if edited is None:  # discarded or skipped (the guard said why): the view keeps its previous image
            return self.datamanager.cached_train[idx]["image"].to(render.device)
        return self._store_edit(idx, edited, size).to(render.device)

    def _first_edit_side(self, size: Tuple[int, int]) -> int:
        """The longer side an edit of a view of `size` is tried at first (edit_max_side, 0: full size)."""
        return first_edit_side(size, self.config.edit_max_side)

    def _store_edit(self, idx: int, edited: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
        """Resize an edit [1, 3, h, w] back to the view's `size` and write it into the cache; the cached image."""
        return self.datamanager.write_edit(idx, resize(edited, size).clamp(0, 1)[0].permute(1, 2, 0))


def edit_seed(seed: int, step: int) -> int:
    """A well-mixed 63-bit seed for the edit made at `step`, so a run can be replayed from any step."""
    return int(np.random.SeedSequence([seed, step]).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))
