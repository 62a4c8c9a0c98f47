"""InstructPix2Pix as an `ImageEditor`, built on diffusers components.

`InstructPix2PixEditor` takes the components (UNet, VAE, CLIP text encoder and tokenizer, DDIM
scheduler) and runs the Instruct-GS2GS edit (see `edit`). `load_ip2p_editor` builds one from a hub
id or a local diffusers folder.

nerfstudio imports every plugin config on every `ns-*` command, so this module imports diffusers
and transformers only inside the functions that need them; `import igs2gs.ip2p` stays light.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

import torch
from torch import Tensor

from igs2gs import ip2p_speed, saved_compile
from igs2gs.ddim import add_noise, check_scheduler, combine_guidance, ddim_schedule, ddim_step, spread_schedule
from igs2gs.diffusers_imports import without_peft
from igs2gs.editor import EditSettings
from igs2gs.fast_group_norm import use_fast_group_norm, use_torch_group_norm

if TYPE_CHECKING:
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

DEFAULT_IP2P_MODEL = "timbrooks/instruct-pix2pix"
"""The InstructPix2Pix checkpoint of the paper (SD 1.5 with an 8-channel UNet input)."""

IP2P_SUBFOLDERS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
"""The subfolders of a diffusers InstructPix2Pix folder that the editor reads."""

_INSTALL = "pip install diffusers==0.42.1 transformers==5.24.0 accelerate==1.15.0"
_CLI_OPTION = "--pipeline.ip2p-model /path/to/folder"


def _download_command(model: str, local_dir: str = "") -> str:
    """The `hf` command that fetches only what the editor reads (not the repository's single-file checkpoints)."""
    target = f" --local-dir {local_dir}" if local_dir else ""
    return f"hf download {model} model_index.json {' '.join(s + '/' for s in IP2P_SUBFOLDERS)}{target}"


class IP2PLoadError(RuntimeError):
    """InstructPix2Pix weights could not be found or are not an InstructPix2Pix checkpoint."""


def _import_diffusers() -> Any:
    """Import diffusers (without peft: diffusers_imports.py), or tell how to install it."""
    try:
        import diffusers
    except ImportError as err:  # pragma: no cover - the pinned stack installs it
        raise ImportError(f"The InstructPix2Pix editor needs diffusers and transformers: {_INSTALL}") from err
    without_peft()
    return diffusers


def _import_transformers() -> Any:
    """Import transformers, or tell how to install it."""
    try:
        import transformers
    except ImportError as err:  # pragma: no cover - the pinned stack installs it
        raise ImportError(f"The InstructPix2Pix editor needs diffusers and transformers: {_INSTALL}") from err
    return transformers


def _place(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> Any:
    """Move a component to `device` and `dtype`, frozen and in eval mode."""
    module.to(device)
    if any(p.dtype != dtype for p in module.parameters() if p.is_floating_point()):
        if getattr(module, "_keep_in_fp32_modules", None):
            module.to(dtype)
        else:
            # diffusers' ModelMixin.to warns about "modules that should be kept in float32" on every cast,
            # even when the model keeps none (its list is empty); nn.Module.to casts the same way, quietly.
            torch.nn.Module.to(module, dtype)
    return module.eval().requires_grad_(False)


@contextlib.contextmanager
def _quiet_progress_bars() -> Iterator[None]:
    """Hide diffusers' and transformers' progress bars (e.g. "Loading weights") inside the block."""
    diffusers, transformers = _import_diffusers(), _import_transformers()
    loggers = [diffusers.utils.logging, transformers.utils.logging]
    enabled = [lg.is_progress_bar_enabled() for lg in loggers]
    for lg in loggers:
        lg.disable_progress_bar()
    try:
        yield
    finally:
        for lg, was_enabled in zip(loggers, enabled):
            if was_enabled:
                lg.enable_progress_bar()


class InstructPix2PixEditor:
    """Edits renders with InstructPix2Pix, conditioned on the original photos (an `ImageEditor`).

    The components are moved to `device` and `dtype` (float16 on CUDA is the usual choice) and
    frozen. The UNet and VAE run in `dtype`; the latents, the guidance and the DDIM update stay in
    float32, and `edit` returns float32.

    All randomness of an edit (T, the VAE posterior sample, the added noise, in that order) is
    drawn in float32 on the CPU from `generator` (or one generator per view), or from torch's
    global CPU RNG when it is None, so a seed gives the same noise on every device.

    Every view of a batch carries its own T: the DDIM update is applied per view from the
    scheduler's own tables (`igs2gs.ddim`), so views with different T share each UNet call.
    Speed-ups that keep what an edit computes are opt-in methods (`enable_fast_kernels`,
    `enable_compile`); so are the original code's memory savers (`enable_model_cpu_offload`,
    `enable_attention_slicing`), which cost speed.
    """

    def __init__(
        self,
        unet: UNet2DConditionModel,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        scheduler: DDIMScheduler,
        device: Union[str, torch.device] = "cuda",
        dtype: torch.dtype = torch.float16,
    ) -> None:
        diffusers = _import_diffusers()
        if not isinstance(scheduler, diffusers.DDIMScheduler):
            raise TypeError(
                f"scheduler must be a diffusers DDIMScheduler, got {type(scheduler).__name__}; "
                "build one with DDIMScheduler.from_config(scheduler.config)"
            )
        latent_channels = int(vae.config.latent_channels)
        if int(unet.config.in_channels) != 2 * latent_channels:
            raise ValueError(
                f"unet takes {unet.config.in_channels} input channels, but InstructPix2Pix needs "
                f"{2 * latent_channels} (the {latent_channels} noisy latents and the {latent_channels} latents of "
                "the original image); pass an InstructPix2Pix UNet such as timbrooks/instruct-pix2pix's"
            )
        check_scheduler(scheduler)
        self.device = torch.device(device)
        self.dtype = dtype
        self.unet = _place(unet, self.device, dtype)
        self.vae = _place(vae, self.device, dtype)
        self.text_encoder = _place(text_encoder, self.device, dtype)
        self.tokenizer = tokenizer
        self.scheduler = scheduler
        # Read once: each edit temporarily sets the scheduler config's num_train_timesteps to T.
        self.num_train_timesteps = int(scheduler.config.num_train_timesteps)
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self._prompt_cache: dict[str, Tensor] = {}  # prompt -> [3, L, D] text embeddings
        self._condition_cache: dict[tuple[Hashable, tuple[int, ...]], Tensor] = {}  # (view, size) -> [C, h, w]
        # The three pieces that run on the GPU, replaced by compiled versions in `enable_compile`.
        self._step: Callable[..., Tensor] = self.denoise_step
        self._encode: Callable[[Tensor], tuple[Tensor, Tensor]] = self._vae_encode
        self._decode: Callable[[Tensor], Tensor] = self._vae_decode
        self._memory_format = torch.contiguous_format
        self._qkv_fused = False
        self._attention_backends: Optional[list[Any]] = None
        self._offload_hooks: list[Any] = []
        self.after_next_edit: Optional[Callable[[], None]] = None
        """Called once, after the next edit returns (editor_warm_up.py reports the saved pieces' first load with it)."""
        self.pad_views_to = 0
        """Pad every batch to at least this many views (repeats of the last, dropped after denoising), so a
        compiled step sees one batch size and is not recompiled for a shorter last batch. 0: no padding."""

    # ---------------------------------------------------------------- memory savers (opt-in)

    def enable_vae_slicing(self) -> None:
        """Encode and decode one image at a time. Saves VAE activation memory for batches of
        several views; costs speed (2B + B sequential VAE calls instead of two); same result."""
        self.vae.enable_slicing()

    def disable_vae_slicing(self) -> None:
        """Encode and decode the whole batch in one VAE call again (the default)."""
        self.vae.disable_slicing()

    def enable_vae_tiling(self) -> None:
        """Encode and decode images above the VAE's tile size (512 px for SD 1.5) in overlapping
        tiles. Bounds VAE memory for large images; costs speed and may leave faint tile seams."""
        self.vae.enable_tiling()

    def disable_vae_tiling(self) -> None:
        """Encode and decode whole images again (the default)."""
        self.vae.disable_tiling()

    def clear_prompt_cache(self) -> None:
        """Forget the cached text embeddings (one [3, 77, 768] tensor per prompt seen)."""
        self._prompt_cache.clear()

    def clear_condition_cache(self) -> None:
        """Forget the cached condition latents of the original photos (one [4, h, w] tensor per view and size)."""
        self._condition_cache.clear()

    def enable_model_cpu_offload(self) -> None:
        """The original code's memory saver: keep the models on the CPU and move each to the GPU when it runs
        (text encoder -> UNet -> VAE, each moving the previous one back), as diffusers' pipelines do. Saves ~2 GB
        of GPU memory; costs the UNet's 1.7 GB round trip over PCIe in every edit. CUDA only; needs accelerate."""
        self._offload_hooks = ip2p_speed.cpu_offload_chain([self.text_encoder, self.unet, self.vae], self.device)

    def disable_model_cpu_offload(self) -> None:
        """Keep every model resident on the editor's device again (the default)."""
        ip2p_speed.remove_offload(self._offload_hooks, [self.text_encoder, self.unet, self.vae], self.device)
        self._offload_hooks = []

    def enable_attention_slicing(self, slice_size: Union[str, int] = "auto") -> None:
        """The original code's attention memory saver: attention over slices of the heads with explicit
        attention matrices instead of fused SDPA. Saves attention memory; several times slower."""
        self.unet.set_attention_slice(slice_size)

    def disable_attention_slicing(self) -> None:
        """Fused scaled-dot-product attention (SDPA) in every attention layer again (the default)."""
        ip2p_speed.use_sdpa(self.unet)

    # ---------------------------------------------------------------- speed-ups (opt-in, same computation)

    def enable_fast_kernels(self, channels_last: bool = False, fuse_qkv: bool = True, group_norm: bool = True) -> None:
        """Fused QKV projections (one matmul instead of three) and GroupNorm statistics spread over the whole GPU
        (igs2gs/fast_group_norm.py); optionally channels-last convolutions. The same arithmetic up to floating-point
        rounding. Eager on an H200, channels-last made a 512 px edit slower (every GroupNorm and LayerNorm copies
        its input back to the contiguous format); torch.compile removes those copies. A later call sets the memory
        format and the GroupNorm as it asks; fused projections stay fused."""
        self._memory_format = torch.channels_last if channels_last else torch.contiguous_format
        for module in (self.unet, self.vae):
            module.to(memory_format=self._memory_format)
            (use_fast_group_norm if group_norm else use_torch_group_norm)(module)
        if fuse_qkv and not self._qkv_fused:
            ip2p_speed.fuse_qkv(self.unet)
            self._qkv_fused = True

    def enable_attention_backends(self, names: Sequence[str]) -> None:
        """Prefer these SDPA backends in this order, e.g. ("CUDNN_ATTENTION", "FLASH_ATTENTION"); torch picks the
        first that supports the shapes. Timing option: all backends compute the same attention."""
        self._attention_backends = ip2p_speed.sdpa_backends(names)

    def _attention_context(self) -> contextlib.AbstractContextManager[Any]:
        if self._attention_backends is None:
            return contextlib.nullcontext()
        return ip2p_speed.prefer_sdpa_backends(self._attention_backends)

    def enable_compile(
        self, cuda_graphs: bool = False, vae: bool = True, cache_dir: Optional[Path] = None, saved: bool = False
    ) -> None:
        """torch.compile the denoising step (UNet, guidance, DDIM update) and, with `vae`, the VAE encoder and
        decoder; with `cuda_graphs`, the step replays as a CUDA graph (mode "reduce-overhead"). Each new image size
        or batch size compiles once (about a minute for the UNet); `cache_dir` keeps the compiled kernels on disk
        for later runs (TORCHINDUCTOR_CACHE_DIR, unless already set). With `saved` (and a `cache_dir`, without
        `cuda_graphs`), each compiled piece is also kept whole there, and later runs load it without tracing
        (igs2gs/saved_compile.py). Call it after the other switches (fast kernels, attention backends). CUDA only."""
        if self.device.type != "cuda":
            raise ValueError(f"enable_compile needs a CUDA editor, this one runs on {self.device}; leave it off on CPU")
        if self._offload_hooks:
            raise ValueError("enable_compile cannot follow enable_model_cpu_offload; call disable_model_cpu_offload")
        folder = ip2p_speed.use_compile_cache(cache_dir) if cache_dir is not None else None
        saved_folder = folder / saved_compile.FOLDER if folder is not None and saved and not cuda_graphs else None
        context = self._compile_context() if saved_folder is not None else ""  # once: it digests every tensor
        self._step = self._compiled(self.denoise_step, "step", cuda_graphs, saved_folder, context)
        if vae:
            self._encode = self._compiled(self._vae_encode, "vae_encode", False, saved_folder, context)
            self._decode = self._compiled(self._vae_decode, "vae_decode", False, saved_folder, context)

    def _compiled(
        self, method: Callable[..., Any], name: str, cuda_graphs: bool, saved_folder: Optional[Path], context: str
    ) -> Union[ip2p_speed.CompiledThenRunOnly, saved_compile.SavedCompile]:
        piece = ip2p_speed.compile_step(method, cuda_graphs=cuda_graphs)
        if saved_folder is None:
            return piece
        return saved_compile.SavedCompile(method, name, saved_folder, context, piece)

    def _compile_context(self) -> str:
        """What the compiled pieces depend on beyond their inputs: the modules' classes, configs and tensors'
        layouts, the UNet's attention processors, the dtype, memory format and attention backends (the key of a saved
        piece, saved_compile.py)."""
        settings = f"dtype {self.dtype}, memory format {self._memory_format}, attention {self._attention_backends}"
        configs = "\n".join(
            f"{name} {[(k, v) for k, v in module.config.items() if not k.startswith('_')]}"  # not its folder's path
            for name, module in (("unet", self.unet), ("vae", self.vae))
        )
        processors = sorted({type(p).__qualname__ for p in getattr(self.unet, "attn_processors", {}).values()})
        digest = saved_compile.modules_digest(self.unet, self.vae)
        return f"{settings}\n{configs}\nattention processors {processors}\n{digest}"

    def _compiled_pieces(self) -> list[Union[ip2p_speed.CompiledThenRunOnly, saved_compile.SavedCompile]]:
        pieces = (self._step, self._encode, self._decode)
        return [p for p in pieces if isinstance(p, (ip2p_speed.CompiledThenRunOnly, saved_compile.SavedCompile))]

    def saved_compile_report(self) -> Optional[str]:
        """What the compiled pieces kept whole did (`enable_compile(saved=True)`): loaded, saved, failed."""
        saved = self._saved_pieces()
        if not saved:
            return None
        loaded, written = sum(len(p.loaded) for p in saved), sum(len(p.saved) for p in saved)
        reading, first_calls = sum(p.load_seconds for p in saved), sum(p.first_call_seconds for p in saved)
        lines = [
            f"igs2gs: compiled pieces kept whole: {loaded} loaded ({reading:.1f} s to read, {first_calls:.1f} s in "
            f"their first calls), {written} compiled and saved"
        ]
        if not saved_compile.supported():
            lines.append("igs2gs: this torch has no AOT compile of modules; the pieces use torch.compile as before")
        return "\n".join(lines + [failure for piece in saved for failure in piece.failures])

    def _saved_pieces(self) -> list[saved_compile.SavedCompile]:
        return [p for p in self._compiled_pieces() if isinstance(p, saved_compile.SavedCompile)]

    @property
    def keeps_compiled_pieces(self) -> bool:
        """Whether its compiled pieces are kept whole for later runs (`enable_compile(saved=True)` on a torch that
        can), so that a compile in another process serves later runs (background_compile.py)."""
        return bool(self._saved_pieces()) and saved_compile.supported()

    @staticmethod
    def _plan(sizes: Sequence[tuple[int, int]], batch_size: int) -> str:
        return f"edit sizes {sorted(set(map(tuple, sizes)))}, batch {batch_size}"

    def saved_plan_ready(self, sizes: Sequence[tuple[int, int]], batch_size: int) -> bool:
        """Whether every piece an edit of these sizes and batch size calls was saved whole by an earlier run's
        warm-up (`record_saved_plan`): the pieces then load at their first call, and nothing compiles."""
        return saved_compile.plan_is_saved(self._saved_pieces(), self._plan(sizes, batch_size))

    def record_saved_plan(self, sizes: Sequence[tuple[int, int]], batch_size: int) -> bool:
        """After the warm-up edits of these sizes and batch size: record the saved pieces they met, for
        `saved_plan_ready` in later runs. Returns whether it did (not when a piece fell back to torch.compile)."""
        return saved_compile.record_plan(self._saved_pieces(), self._plan(sizes, batch_size))

    @property
    def compiling(self) -> bool:
        """True while a compiled piece still compiles inputs it has not met (`enable_compile`, before
        `stop_compiling`)."""
        return any(piece.compiling for piece in self._compiled_pieces())

    def stop_compiling(self) -> None:
        """Keep what was compiled so far and run calls it does not fit eagerly (see `ip2p_speed.CompiledThenRunOnly`:
        a training run compiles only before its training and viewer threads start)."""
        for piece in self._compiled_pieces():
            piece.stop_compiling()

    def disable_compile(self) -> None:
        """Run eagerly again (the default)."""
        self._step, self._encode, self._decode = self.denoise_step, self._vae_encode, self._vae_decode

    def _vae_encode(self, images: Tensor) -> tuple[Tensor, Tensor]:  # [N, 3, H, W] in [-1, 1]
        posterior = self.vae.encode(images).latent_dist
        return posterior.mean, posterior.std

    def _vae_decode(self, latents: Tensor) -> Tensor:  # [N, C, h, w] unscaled -> [N, 3, H, W] in about [-1, 1]
        return self.vae.decode(latents, return_dict=False)[0]

    # ---------------------------------------------------------------- checks

    def check_inputs(
        self,
        renders: Tensor,
        originals: Tensor,
        settings: EditSettings,
        generator: Union[None, torch.Generator, Sequence[torch.Generator]] = None,
        view_ids: Optional[Sequence[Hashable]] = None,
    ) -> None:
        """Raise ValueError/TypeError naming the argument, the value it got and the fix."""
        for name, images in (("renders", renders), ("originals", originals)):
            if not isinstance(images, Tensor):
                raise TypeError(f"{name} must be a torch.Tensor of shape [B, 3, H, W], got {type(images).__name__}")
            if images.ndim != 4 or images.shape[1] != 3 or images.shape[0] < 1:
                raise ValueError(
                    f"{name} must have shape [B, 3, H, W] with B >= 1, got {tuple(images.shape)}; pass RGB images "
                    "channels first, e.g. image.permute(2, 0, 1)[None] for one [H, W, 3] image"
                )
            if not images.is_floating_point():
                raise TypeError(
                    f"{name} must be floating point with values in [0, 1], got dtype {images.dtype}; "
                    "convert with images.float() / 255"
                )
        if originals.shape != renders.shape:
            raise ValueError(
                f"originals must have the shape of renders, got originals {tuple(originals.shape)} and renders "
                f"{tuple(renders.shape)}; resize the originals to the render resolution (or render at full resolution)"
            )
        height, width = renders.shape[-2:]
        factor = self.vae_scale_factor
        if height % factor or width % factor:
            raise ValueError(
                f"renders and originals have height x width {height} x {width}; both must be multiples of {factor} "
                f"(the VAE downscale factor); crop or resize them, e.g. to {height // factor * factor} x "
                f"{width // factor * factor}"
            )
        for name, images in (("renders", renders), ("originals", originals)):
            bad = int((~torch.isfinite(images)).sum())
            if bad:
                raise ValueError(
                    f"{name} contain {bad} non-finite values (NaN or inf); edit only finite images in [0, 1] "
                    "(check the render or the photo loaded for this view)"
                )

        if not isinstance(settings, EditSettings):
            raise TypeError(f"settings must be an igs2gs.editor.EditSettings, got {type(settings).__name__}")
        if not isinstance(settings.prompt, str):
            raise TypeError(f"settings.prompt must be a str, got {type(settings.prompt).__name__}")
        for name in ("guidance_scale", "image_guidance_scale"):
            value = getattr(settings, name)
            if not (isinstance(value, (int, float)) and 0 < value < float("inf")):
                raise ValueError(
                    f"settings.{name} must be a finite number > 0, got {value!r}; the paper uses "
                    f"{EditSettings.__dataclass_fields__[name].default}"
                )
        steps = settings.diffusion_steps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"settings.diffusion_steps must be an int >= 1, got {steps!r}; the paper uses 20")
        lower, upper = settings.lower_bound, settings.upper_bound
        if not (isinstance(lower, (int, float)) and isinstance(upper, (int, float)) and 0 < lower <= upper <= 1):
            raise ValueError(
                f"settings.lower_bound and settings.upper_bound must satisfy 0 < lower_bound <= upper_bound <= 1, "
                f"got lower_bound={lower!r}, upper_bound={upper!r}; the paper uses 0.70 and 0.98"
            )
        n_train = self.num_train_timesteps
        if int(lower * n_train) <= steps:
            raise ValueError(
                f"settings.lower_bound={lower!r} lets T drop to int({lower!r} x {n_train}) = {int(lower * n_train)} "
                f"noise steps, too few to spread settings.diffusion_steps={steps} DDIM steps over [0, T); raise "
                f"lower_bound to at least {(steps + 1) / n_train:g} or lower diffusion_steps"
            )
        batch = renders.shape[0]
        if isinstance(generator, (list, tuple)):
            if len(generator) != batch:
                raise ValueError(
                    f"generator holds {len(generator)} generators for {batch} views; pass one per view "
                    "(or a single generator, which draws one T for the whole batch)"
                )
            generators = list(generator)
        elif generator is None or isinstance(generator, torch.Generator):
            generators = [generator] if generator is not None else []
        else:
            raise TypeError(
                f"generator must be a torch.Generator, a list of them or None, got {type(generator).__name__}"
            )
        for g in generators:
            if not isinstance(g, torch.Generator):
                raise TypeError(f"generator must be a torch.Generator or None, got {type(g).__name__}")
            if g.device.type != "cpu":
                raise ValueError(
                    f"generator must be a CPU generator, got one on {g.device}; noise is drawn on the CPU so "
                    "every device gets the same edit: pass torch.Generator('cpu').manual_seed(seed)"
                )
        if view_ids is not None and len(view_ids) != batch:
            raise ValueError(f"view_ids holds {len(view_ids)} ids for {batch} views; pass one id per view or None")

    # ---------------------------------------------------------------- pieces of the edit

    def encode_prompt(self, prompt: str) -> Tensor:  # [3, L, D] for [prompt, "", ""]
        """Text embeddings of the three branches, computed once per prompt string and cached."""
        cached = self._prompt_cache.get(prompt)
        if cached is not None:
            return cached
        max_length = self.tokenizer.model_max_length
        n_tokens = len(self.tokenizer(prompt).input_ids)
        if n_tokens > max_length:
            warnings.warn(
                f"settings.prompt has {n_tokens} tokens; CLIP reads only the first {max_length}, the rest is ignored",
                stacklevel=3,
            )
        tokens = self.tokenizer(
            [prompt, ""], padding="max_length", max_length=max_length, truncation=True, return_tensors="pt"
        )
        embeddings = self.text_encoder(tokens.input_ids.to(self.device))[0]  # [2, L, D]
        embeddings = embeddings[[0, 1, 1]].to(device=self.device, dtype=self.dtype)  # [prompt, "", ""]
        self._prompt_cache[prompt] = embeddings
        return embeddings

    def draw_T(self, settings: EditSettings, generator: Optional[torch.Generator] = None) -> int:
        """Draw the noise level T uniformly among the integers [int(lower x N), int(upper x N)]."""
        low = int(settings.lower_bound * self.num_train_timesteps)
        high = int(settings.upper_bound * self.num_train_timesteps)
        return int(torch.randint(low, high + 1, (1,), generator=generator, device="cpu"))

    def timestep_schedule(self, T: int, steps: int) -> contextlib.AbstractContextManager[Tensor]:
        """Spread `steps` DDIM steps over [0, T) for the duration of the block; yield the timesteps
        (see `igs2gs.ddim.spread_schedule`; the scheduler's config is restored on exit)."""
        return spread_schedule(self.scheduler, T, steps, device=self.device)

    def draw_noise(
        self,
        settings: EditSettings,
        latent_shape: tuple[int, ...],  # [B, C, h, w]
        generator: Union[None, torch.Generator, Sequence[torch.Generator]] = None,
    ) -> EditNoise:
        """All randomness of an edit, drawn in float32 on the CPU: T, then the VAE sample noise, then the added noise.

        One generator (or None: the global CPU RNG) draws one T for the whole batch and then each noise tensor for
        all views at once. A sequence holds one generator per view, and each view draws its own T and noise from
        its own generator in that order, so a view's edit does not depend on the views batched with it.
        """
        if generator is None or isinstance(generator, torch.Generator):
            T = self.draw_T(settings, generator)
            vae_noise = torch.randn(latent_shape, generator=generator, dtype=torch.float32)
            noise = torch.randn(latent_shape, generator=generator, dtype=torch.float32)
            return EditNoise([T] * latent_shape[0], vae_noise, noise)
        Ts, vae_noises, noises = [], [], []
        for g in generator:
            Ts.append(self.draw_T(settings, g))
            vae_noises.append(torch.randn((1, *latent_shape[1:]), generator=g, dtype=torch.float32))
            noises.append(torch.randn((1, *latent_shape[1:]), generator=g, dtype=torch.float32))
        return EditNoise(Ts, torch.cat(vae_noises), torch.cat(noises))

    def _vae_chunks(self, batch: int) -> int:
        """Images per VAE call: one with VAE slicing, the whole batch otherwise."""
        return 1 if getattr(self.vae, "use_slicing", False) else batch

    def encode_images(self, images: Tensor) -> tuple[Tensor, Tensor]:  # [B, 3, H, W] in [0, 1] -> 2 x [B, C, h, w]
        """Mean and standard deviation of the VAE posterior (float32), in chunks (see `enable_vae_slicing`)."""
        images = images.to(device=self.device, dtype=self.dtype) * 2 - 1
        means, stds = [], []
        for chunk in images.split(self._vae_chunks(images.shape[0])):
            mean, std = self._encode(chunk.contiguous(memory_format=self._memory_format))
            means.append(mean.float())
            stds.append(std.float())
        return torch.cat(means), torch.cat(stds)

    def decode_latents(self, latents: Tensor) -> Tensor:  # [B, C, h, w] scaled latents -> [B, 3, H, W] in [0, 1]
        """Decode (in chunks, see `enable_vae_slicing`) and map to [0, 1], float32."""
        latents = (latents / self.vae.config.scaling_factor).to(self.dtype)
        decoded = [self._decode(chunk.contiguous(memory_format=self._memory_format)).float() for chunk in
                   latents.split(self._vae_chunks(latents.shape[0]))]  # fmt: skip
        return (torch.cat(decoded) / 2 + 0.5).clamp(0, 1)

    def condition_latents(self, originals: Tensor, view_ids: Optional[Sequence[Hashable]] = None) -> Tensor:
        """Image condition of each view: the VAE posterior mode of its original photo, unscaled ([B, C, h, w]).

        With `view_ids` the latents are cached per (view id, size): an original photo never changes during a run,
        so each is encoded once (`clear_condition_cache` forgets them, e.g. for another scene).
        """
        size = tuple(originals.shape[-2:])
        keys = [(view_id, size) for view_id in view_ids] if view_ids is not None else None
        if keys is not None and all(key in self._condition_cache for key in keys):
            return torch.stack([self._condition_cache[key] for key in keys])
        condition = self.encode_images(originals)[0].to(self.dtype)  # the mode of a Gaussian is its mean
        if keys is not None:
            self._condition_cache.update({key: latent for key, latent in zip(keys, condition)})
        return condition

    def denoise_step(
        self,
        latents: Tensor,  # [B, C, h, w] float32 x_t
        condition: Tensor,  # [3B, C, h, w] image condition of the branches: [c, c, 0]
        text: Tensor,  # [3B, L, D] text embeddings of the branches: [prompt, "", ""]
        timesteps: Tensor,  # [3B] int64 timestep of each UNet sample
        guidance: Tensor,  # [2] float32 (s_text, s_img)
        factors: Tensor,  # [4, B] float32 DDIM factors of this step (see DDIMSchedule)
        clip_sample: float,
    ) -> Tensor:  # [B, C, h, w] x_prev
        """One denoising step of every view: the three UNet branches in one call, the guidance, the DDIM update."""
        noisy = torch.cat([latents] * 3).to(self.dtype)  # DDIM's scale_model_input is the identity
        unet_input = torch.cat([noisy, condition], dim=1).contiguous(memory_format=self._memory_format)
        eps = self.unet(unet_input, timesteps, encoder_hidden_states=text, return_dict=False)[0]
        eps = combine_guidance(eps, guidance[0], guidance[1])
        return ddim_step(eps, latents, *factors, clip_sample=clip_sample)

    # ---------------------------------------------------------------- the edit

    @torch.no_grad()
    def edit(
        self,
        renders: Tensor,  # [B, 3, H, W] in [0, 1]
        originals: Tensor,  # [B, 3, H, W] in [0, 1]
        settings: EditSettings,
        generator: Union[None, torch.Generator, Sequence[torch.Generator]] = None,
        view_ids: Optional[Sequence[Hashable]] = None,
    ) -> Tensor:  # [B, 3, H, W] in [0, 1], float32, on the renders' device
        """Edit the renders towards `settings.prompt`, conditioned on the original photos.

        `generator`: one CPU generator draws one T shared by the batch; a sequence of B generators gives each view
        its own T and noise, so a batched edit equals the views' separate edits (see `draw_noise`). `view_ids`
        (optional, one per view) caches the condition latents of the originals (see `condition_latents`).
        """
        # 0. Check inputs
        self.check_inputs(renders, originals, settings, generator, view_ids)
        batch, steps = renders.shape[0], settings.diffusion_steps
        factor, channels = self.vae_scale_factor, int(self.vae.config.latent_channels)
        latent_shape = (batch, channels, renders.shape[-2] // factor, renders.shape[-1] // factor)

        # 1. Draw T, the VAE sample noise and the added noise (CPU, float32)
        draws = self.draw_noise(settings, latent_shape, generator)

        # 2. Encode the renders (posterior sample, scaled) and the originals (posterior mode, unscaled; cached)
        mean, std = self.encode_images(renders)
        latents = (mean + std * draws.vae_noise.to(self.device)) * self.vae.config.scaling_factor
        condition = self.condition_latents(originals, view_ids)

        # 3. Each view's DDIM schedule over [0, T); pad the batch to the compiled size (padding views are dropped)
        pad = max(0, self.pad_views_to - batch)
        Ts = draws.Ts + draws.Ts[-1:] * pad
        schedule = ddim_schedule(self.scheduler, Ts, steps).to(self.device)
        latents, condition, noise = (_pad(x, pad) for x in (latents, condition, draws.noise.to(self.device)))
        views = batch + pad

        # 4. Add noise at each view's first timestep
        latents = add_noise(latents, noise, schedule.sqrt_alpha[0], schedule.sqrt_one_minus_alpha[0])

        # 5. Denoise, three branches [text + image, image, none] per view in one UNet call per step
        text = self.encode_prompt(settings.prompt).repeat_interleave(views, dim=0)  # [3B, L, D]
        condition = torch.cat([condition, condition, torch.zeros_like(condition)])  # [3B, C, h, w]
        # One layout whether the condition latents come from the cache or the (channels-last) encoder, so a compiled
        # step's guards pass in every round.
        latents, condition = latents.contiguous(), condition.contiguous()
        guidance = torch.tensor([settings.guidance_scale, settings.image_guidance_scale], device=self.device)
        timesteps = schedule.timesteps.repeat(1, 3)  # [S, 3B]
        factors = torch.stack([getattr(schedule, name) for name in _FACTORS], dim=1)  # [S, 4, B]
        with self._attention_context():
            for k in range(steps):
                latents = self._step(latents, condition, text, timesteps[k], guidance, factors[k], schedule.clip_sample)

        # 6. Decode the real views and map to [0, 1]
        edited = self.decode_latents(latents[:batch]).to(renders.device)
        if self.after_next_edit is not None:
            callback, self.after_next_edit = self.after_next_edit, None
            callback()
        return edited


_FACTORS = ("sqrt_alpha", "sqrt_one_minus_alpha", "sqrt_alpha_prev", "sqrt_one_minus_alpha_prev")


@dataclass
class EditNoise:
    """The random draws of one edit (see `InstructPix2PixEditor.draw_noise`)."""

    Ts: list[int]  # per view
    vae_noise: Tensor  # [B, C, h, w] float32, CPU: the VAE posterior sample
    noise: Tensor  # [B, C, h, w] float32, CPU: the noise added at the first timestep


def _pad(x: Tensor, pad: int) -> Tensor:
    """Repeat the last view `pad` times along dim 0."""
    return torch.cat([x, x[-1:].expand(pad, *x.shape[1:])]) if pad else x


# -------------------------------------------------------------------- loading and saving


def _is_offline() -> bool:
    """Whether huggingface_hub runs in offline mode (HF_HUB_OFFLINE)."""
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:  # pragma: no cover
        return os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


def _unreachable_message(model: str, what: str, cause: BaseException) -> str:
    offline = " (HF_HUB_OFFLINE is set)" if _is_offline() else ""
    return (
        f"Could not load the InstructPix2Pix {what} of {model!r}: {cause}\n"
        f"{model!r} is not a local folder, so it was looked up on the Hugging Face hub and in the local hub "
        f"cache{offline}. Without network access, or with HF_HUB_OFFLINE=1, the weights must already be in "
        f"the cache: download them once with `{_download_command(model)}`. Or pass a local diffusers folder (with "
        f"{', '.join(s + '/' for s in IP2P_SUBFOLDERS)}) with `{_CLI_OPTION}`."
    )


def _looks_like_path(model: str) -> bool:
    """A hub id is `name` or `owner/name`; anything else is meant as a folder."""
    return model.startswith(("/", ".", "~")) or "\\" in model or model.count("/") > 1 or not model


def _resolve_model(model: str) -> tuple[str, bool]:
    """Return (what to pass to from_pretrained, whether it is a local folder); check local folders."""
    path = Path(model).expanduser()
    if path.is_dir():
        missing = [name for name in IP2P_SUBFOLDERS if not (path / name).is_dir()]
        if missing:
            raise IP2PLoadError(
                f"{str(path)!r} is not a diffusers InstructPix2Pix folder: it lacks the subfolders "
                f"{', '.join(m + '/' for m in missing)} (it needs {', '.join(s + '/' for s in IP2P_SUBFOLDERS)}). "
                f"Write one with `{_download_command(DEFAULT_IP2P_MODEL, str(path))}` or "
                f"StableDiffusionInstructPix2PixPipeline.save_pretrained, and pass it with `{_CLI_OPTION}`."
            )
        return str(path), True
    if path.exists():
        raise IP2PLoadError(
            f"{str(path)!r} is a file, not a diffusers InstructPix2Pix folder; pass the folder that holds "
            f"{', '.join(s + '/' for s in IP2P_SUBFOLDERS)} with `{_CLI_OPTION}`."
        )
    if _looks_like_path(model):
        raise IP2PLoadError(
            f"The InstructPix2Pix folder {str(path)!r} does not exist. Pass an existing local diffusers folder "
            f"with `{_CLI_OPTION}`, or a hub id such as {DEFAULT_IP2P_MODEL!r} (which needs network access or a "
            f"filled hub cache; HF_HUB_OFFLINE=1 allows only the cache)."
        )
    return model, False


def load_ip2p_editor(
    model: str = DEFAULT_IP2P_MODEL,
    device: Union[str, torch.device] = "cuda",
    full_precision: bool = False,
) -> InstructPix2PixEditor:
    """Load InstructPix2Pix from a hub id or a local diffusers folder into an `InstructPix2PixEditor`.

    Every component comes from `model` (safetensors preferred where present); the DDIM scheduler is
    built from the checkpoint's own scheduler config. float16 on CUDA unless `full_precision`;
    float32 on other devices. Raises `IP2PLoadError` when the weights cannot be reached or are not
    an InstructPix2Pix checkpoint.
    """
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise IP2PLoadError(
            f"device={str(device)!r} but torch finds no CUDA device (torch.cuda.is_available() is False); "
            "pass device='cpu' (slow: minutes per 512 px edit) or run on a machine with a CUDA GPU"
        )
    dtype = torch.float32 if full_precision else torch.float16
    if dtype == torch.float16 and device.type != "cuda":
        warnings.warn(
            f"InstructPix2Pix on {device}: overriding full_precision=False to float32 (float16 is for CUDA); "
            "pass full_precision=True to silence this",
            stacklevel=2,
        )
        dtype = torch.float32

    source, local = _resolve_model(str(model))
    diffusers = _import_diffusers()
    transformers = _import_transformers()

    def fail(what: str, err: BaseException) -> IP2PLoadError:
        if local:
            return IP2PLoadError(
                f"{source!r} is not a loadable diffusers InstructPix2Pix folder: reading its {what} failed: {err}\n"
                f"Pass a complete folder with `{_CLI_OPTION}` (e.g. one written by "
                f"`{_download_command(DEFAULT_IP2P_MODEL, 'DIR')}`)."
            )
        return IP2PLoadError(_unreachable_message(source, what, err))

    with warnings.catch_warnings(), _quiet_progress_bars():
        # diffusers 0.42 still passes the deprecated `local_dir_use_symlinks` to huggingface_hub; not ours to fix.
        warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*")
        try:
            unet_config = diffusers.UNet2DConditionModel.load_config(source, subfolder="unet")
        except (OSError, ValueError) as err:
            raise fail("UNet config (unet/config.json)", err) from err
        if unet_config.get("in_channels") != 8:
            raise IP2PLoadError(
                f"{source!r} is not an InstructPix2Pix checkpoint: its unet/config.json has in_channels="
                f"{unet_config.get('in_channels')}, InstructPix2Pix's UNet takes 8 (4 noisy latents + 4 latents of "
                f"the original image). Pass an InstructPix2Pix model such as {DEFAULT_IP2P_MODEL!r} with "
                f"`{_CLI_OPTION}`."
            )
        loaders = {
            "unet": lambda: diffusers.UNet2DConditionModel.from_pretrained(source, subfolder="unet", dtype=dtype),
            "vae": lambda: diffusers.AutoencoderKL.from_pretrained(source, subfolder="vae", dtype=dtype),
            "text_encoder": lambda: transformers.CLIPTextModel.from_pretrained(
                source, subfolder="text_encoder", dtype=dtype
            ),
            "tokenizer": lambda: transformers.CLIPTokenizer.from_pretrained(source, subfolder="tokenizer"),
            "scheduler": lambda: diffusers.DDIMScheduler.from_config(
                diffusers.DDIMScheduler.load_config(source, subfolder="scheduler")
            ),
        }
        components: dict[str, Any] = {}
        for name, load in loaders.items():
            try:
                components[name] = load()
            except (OSError, ValueError) as err:
                raise fail(f"{name} ({name}/)", err) from err
    return InstructPix2PixEditor(**components, device=device, dtype=dtype)


def save_ip2p_folder(
    folder: Union[str, Path],
    unet: UNet2DConditionModel,
    vae: AutoencoderKL,
    text_encoder: CLIPTextModel,
    tokenizer: CLIPTokenizer,
    scheduler: Any,
) -> Path:
    """Write components as a local diffusers InstructPix2Pix folder (safetensors) that
    `load_ip2p_editor` and `StableDiffusionInstructPix2PixPipeline.from_pretrained` read."""
    diffusers = _import_diffusers()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with _quiet_progress_bars():
        unet.save_pretrained(folder / "unet", safe_serialization=True)
        vae.save_pretrained(folder / "vae", safe_serialization=True)
        text_encoder.save_pretrained(folder / "text_encoder")  # transformers 5 writes safetensors only
        tokenizer.save_pretrained(folder / "tokenizer")
        scheduler.save_pretrained(folder / "scheduler")
    model_index = {
        "_class_name": "StableDiffusionInstructPix2PixPipeline",
        "_diffusers_version": diffusers.__version__,
        "unet": ["diffusers", type(unet).__name__],
        "vae": ["diffusers", type(vae).__name__],
        "text_encoder": ["transformers", type(text_encoder).__name__],
        "tokenizer": ["transformers", type(tokenizer).__name__],
        "scheduler": ["diffusers", type(scheduler).__name__],
        "safety_checker": [None, None],
        "feature_extractor": [None, None],
        "image_encoder": [None, None],
        "requires_safety_checker": False,
    }
    (folder / "model_index.json").write_text(json.dumps(model_index, indent=2) + "\n")
    return folder
