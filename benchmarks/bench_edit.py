"""Edit latency of InstructPix2Pix at 512 px, 20 DDIM steps: the original's configuration against ours.

One process, one card, the real architecture with random weights (benchmarks/make_random_ip2p.py):

- original: float16, model CPU offload, attention slicing, one view per call, condition re-encoded each edit
  (what the original code runs), and `resident`: the same one view per call with everything on the GPU;
- ours: resident float16 with SDPA, channels-last, fused QKV, condition latents cached per view, several views
  per UNet call (each with its own T), optionally cuDNN attention, torch.compile and CUDA graphs;
  `batch8-step` and `batch8-autotune` compile only the denoising step, with torch.compile's defaults and with
  max-autotune's kernel search (`batch8-autotune-gemm`: for the matmuls only): compare their steps with
  `--breakdown batch8-step,batch8-autotune`.

Prints ms per edit (per view), the speed-up over the original, achieved TFLOP/s (FLOPs counted with
torch.utils.flop_counter.FlopCounterMode on the same edit run eagerly) and its fraction of the float16 and
bfloat16 matmul peaks measured in the same run, the peak GPU memory, and for compiled variants the compile time.

    python benchmarks/bench_edit.py --arch ARCH_DIR --out OUT/bench_edit.json [--variants original,batch8,...]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.make_random_ip2p import DEFAULT_ARCH, build_arch_components  # noqa: E402
from igs2gs.editor import EditSettings  # noqa: E402
from igs2gs.ip2p import InstructPix2PixEditor  # noqa: E402

PROMPT = "turn the bear into a panda"
DEVICE = "cuda"
"""The card; `--smoke` runs everything on the CPU with the tiny test model (a check of this script, no timing)."""


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def reset_peak() -> None:
    if DEVICE == "cuda":
        torch.cuda.reset_peak_memory_stats()


def peak_gib() -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if DEVICE == "cuda" else 0.0


def event_ms(fn: Callable[[], Any]) -> float:
    """Milliseconds of fn on the device (events on CUDA, a synchronised clock elsewhere)."""
    if DEVICE != "cuda":
        t0 = time.perf_counter()
        fn()
        return 1000 * (time.perf_counter() - t0)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


@dataclass
class Variant:
    """One way of running the edit."""

    name: str
    views: int = 1
    """Views per editor call."""
    memory_savers: bool = False
    """Model CPU offload and attention slicing (the original's)."""
    cache_conditions: bool = True
    fast_kernels: bool = True
    attention: Optional[list[str]] = None
    compile: bool = False
    compile_vae: bool = True
    """With `compile`: the VAE too (else only the denoising step; its breakdown times the step alone)."""
    cuda_graphs: bool = False
    inductor: dict[str, Any] = field(default_factory=dict)
    """Inductor settings while the variant compiles (`torch._inductor.config.patch`)."""
    heads_first: bool = False
    """Attention on q, k, v copied to [batch, heads, tokens, head dim] before SDPA (`HeadsFirstAttention`)
    instead of handed over as strided views of the fused projection's output."""
    cudnn_benchmark: bool = False
    """cuDNN times its convolution algorithms at each new shape and keeps the fastest
    (`torch.backends.cudnn.benchmark`), instead of its heuristics' first choice. Compiled graphs call cuDNN too."""
    note: str = ""


class HeadsFirstAttention:
    """diffusers' `FusedAttnProcessor2_0` for the UNet's transformer blocks (3-D input, no mask or norms), with q, k
    and v made contiguous per head before SDPA; anything else goes to diffusers' processor. An experiment: does the
    attention kernel run faster on contiguous heads than on views with a stride of three projections per token?"""

    def __init__(self) -> None:
        from diffusers.models.attention_processor import FusedAttnProcessor2_0

        self.fallback = FusedAttnProcessor2_0()

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: Any = None,
                 attention_mask: Any = None, temb: Any = None, *args: Any, **kwargs: Any) -> torch.Tensor:  # fmt: skip
        plain = attention_mask is None and hidden_states.ndim == 3 and not attn.residual_connection
        plain = plain and attn.spatial_norm is None and attn.group_norm is None and attn.norm_q is None
        plain = plain and attn.norm_k is None and not attn.norm_cross and attn.rescale_output_factor == 1
        if not plain:
            return self.fallback(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        if encoder_hidden_states is None:
            query, key, value = attn.to_qkv(hidden_states).chunk(3, dim=-1)
        else:
            query = attn.to_q(hidden_states)
            key, value = attn.to_kv(encoder_hidden_states).chunk(2, dim=-1)
        batch, heads = hidden_states.shape[0], attn.heads
        query, key, value = (
            t.view(batch, -1, heads, t.shape[-1] // heads).transpose(1, 2).contiguous() for t in (query, key, value)
        )
        out = torch.nn.functional.scaled_dot_product_attention(query, key, value)
        out = out.transpose(1, 2).reshape(batch, -1, out.shape[1] * out.shape[3])
        return attn.to_out[1](attn.to_out[0](out))


MAX_AUTOTUNE = {
    "max_autotune": True,
    "max_autotune_gemm_backends": "ATEN,TRITON",
    "max_autotune_conv_backends": "ATEN,TRITON",
}
"""Inductor's mode "max-autotune-no-cudagraphs": each matmul and convolution timed against Triton templates."""

MAX_AUTOTUNE_GEMM = {**MAX_AUTOTUNE, "max_autotune_conv_backends": "ATEN"}
"""max-autotune for the matmuls only; convolutions stay cuDNN's (a shorter search)."""

VARIANTS = {
    v.name: v
    for v in [
        Variant("original", memory_savers=True, cache_conditions=False, fast_kernels=False,
                note="fp16, model CPU offload, attention slicing, 1 view per call, condition encoded each edit"),
        Variant("resident", cache_conditions=False, fast_kernels=False,
                note="fp16 resident, SDPA, 1 view per call (this repository before issue 3)"),
        Variant("batch1", note="fast kernels, cached conditions, 1 view per call, eager"),
        Variant("batch8", views=8, note="8 views per UNet call, eager"),
        Variant("batch8-cudnn", views=8, attention=["CUDNN_ATTENTION", "FLASH_ATTENTION", "EFFICIENT_ATTENTION"],
                note="8 views per call, cuDNN attention first, eager"),
        Variant("batch16", views=16, note="16 views per UNet call, eager"),
        Variant("batch8-compiled", views=8, compile=True, note="8 views per call, torch.compile (the default)"),
        Variant("batch8-graphs", views=8, compile=True, cuda_graphs=True, note="8 views, compile + CUDA graphs"),
        Variant("batch16-compiled", views=16, compile=True, note="16 views per call, torch.compile"),
        Variant("batch1-graphs", views=1, compile=True, cuda_graphs=True, note="1 view per call, compile + graphs"),
        Variant("batch8-step", views=8, compile=True, compile_vae=False,
                note="8 views per call, the denoising step compiled with torch.compile's defaults, VAE eager"),
        Variant("batch8-autotune", views=8, compile=True, compile_vae=False, inductor=MAX_AUTOTUNE,
                note="8 views per call, the denoising step compiled with max-autotune's kernel search, VAE eager"),
        Variant("batch8-cudnnbench", views=8, cudnn_benchmark=True, note="8 views per call, eager, cuDNN autotuner"),
        Variant("batch8-step-cudnnbench", views=8, compile=True, compile_vae=False, cudnn_benchmark=True,
                note="8 views per call, the denoising step compiled, VAE eager, cuDNN autotuner"),
        Variant("batch16-compiled-cudnnbench", views=16, compile=True, cudnn_benchmark=True,
                note="16 views per call, torch.compile, cuDNN autotuner"),
        Variant("batch8-step-freezing", views=8, compile=True, compile_vae=False, inductor={"freezing": True},
                note="8 views per call, the denoising step compiled with the weights frozen as constants, VAE eager"),
        Variant("batch16-compiled-freezing", views=16, compile=True, inductor={"freezing": True},
                note="16 views per call, torch.compile with the weights frozen as constants"),
        Variant("batch16-compiled-fixed-rblock", views=16, compile=True, inductor={"dynamic_scale_rblock": False},
                note="16 views per call, torch.compile without inductor's load-time halving of reduction blocks"),
        Variant("batch16-compiled-heads-first", views=16, compile=True, heads_first=True,
                note="16 views per call, torch.compile, attention on q, k, v copied contiguous per head"),
        Variant("batch16-heads-first", views=16, heads_first=True,
                note="16 views per call, eager, attention on q, k, v copied contiguous per head"),
        Variant("batch16-graphs", views=16, compile=True, cuda_graphs=True, note="16 views, compile + CUDA graphs"),
        Variant("batch8-autotune-gemm", views=8, compile=True, compile_vae=False, inductor=MAX_AUTOTUNE_GEMM,
                note="8 views per call, the denoising step compiled with max-autotune for its matmuls only, VAE eager"),
    ]
}  # fmt: skip
DEFAULT_VARIANTS = "original,resident,batch1,batch8,batch8-cudnn,batch8-compiled,batch8-graphs"


@dataclass
class Record:
    """What one variant measured."""

    name: str
    note: str
    views: int
    ms_per_call: float
    ms_per_view: float
    ms_per_view_all: list[float]
    tflop_per_view: float
    peak_gib: float
    first_call_s: float
    extra: dict[str, Any] = field(default_factory=dict)


def matmul_peak(dtype: torch.dtype, n: int = 8192, repeats: int = 30) -> float:
    """Measured dense matmul rate in TFLOP/s (median of `repeats` n^3 products on random data)."""
    if DEVICE != "cuda":
        n, repeats = 256, 3
    a, b = (torch.randn(n, n, device=DEVICE, dtype=dtype) for _ in range(2))
    for _ in range(5):
        a @ b
    times = [event_ms(lambda: a @ b) / 1000 for _ in range(repeats)]
    return 2 * n**3 / statistics.median(times) / 1e12


def inputs(views: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator(DEVICE).manual_seed(seed)
    return tuple(torch.rand(views, 3, size, size, device=DEVICE, generator=g) for _ in range(2))  # type: ignore


def edit_call(editor: InstructPix2PixEditor, variant: Variant, size: int, call: int) -> Callable[[], torch.Tensor]:
    """One editor call as the variant makes it; inputs rotate among 4 sets (views keep their ids)."""
    renders, originals = inputs(variant.views, size, seed=call % 4)
    settings = EditSettings(PROMPT)
    ids = [(call % 4) * 100 + v for v in range(variant.views)] if variant.cache_conditions else None
    if variant.views == 1 and not variant.cache_conditions:
        gens: Any = torch.Generator("cpu").manual_seed(call)
    else:
        gens = [torch.Generator("cpu").manual_seed(call * 100 + v) for v in range(variant.views)]
    return lambda: editor.edit(renders, originals, settings, generator=gens, view_ids=ids)


@contextlib.contextmanager
def running_eagerly(editor: InstructPix2PixEditor) -> Iterator[None]:
    """Inside the block, what `enable_compile` compiled (the step and the VAE) runs eagerly; kept for after."""
    pieces = editor._step, editor._encode, editor._decode
    editor._step, editor._encode, editor._decode = editor.denoise_step, editor._vae_encode, editor._vae_decode
    try:
        yield
    finally:
        editor._step, editor._encode, editor._decode = pieces


def configure(editor: InstructPix2PixEditor, variant: Variant, cache_dir: Path) -> None:
    torch.backends.cudnn.benchmark = variant.cudnn_benchmark
    if variant.memory_savers:
        editor.enable_attention_slicing()
        editor.enable_model_cpu_offload()
    if variant.fast_kernels:  # as configure_editor does (igs2gs/fast_edits.py)
        editor.enable_fast_kernels(channels_last=variant.compile, group_norm=not variant.compile)
    if variant.views > 1:
        editor.enable_vae_slicing()
    if variant.heads_first:
        editor.unet.set_attn_processor(HeadsFirstAttention())
    editor._attention_backends = None
    if variant.attention:
        editor.enable_attention_backends(variant.attention)
    if variant.compile:
        editor.enable_compile(cuda_graphs=variant.cuda_graphs, vae=variant.compile_vae, cache_dir=cache_dir)
        editor.pad_views_to = variant.views


def unconfigure(editor: InstructPix2PixEditor, variant: Variant) -> None:
    torch.backends.cudnn.benchmark = False
    if variant.memory_savers:
        editor.disable_model_cpu_offload()
        editor.disable_attention_slicing()
    editor.disable_vae_slicing()
    if variant.heads_first:
        from diffusers.models.attention_processor import FusedAttnProcessor2_0

        editor.unet.set_attn_processor(FusedAttnProcessor2_0())
    editor.disable_compile()
    editor.pad_views_to = 0


def count_tflop(editor: InstructPix2PixEditor, variant: Variant, size: int) -> float:
    """FLOPs of one call run eagerly (the compiled call runs the same operations), in TFLOP per view."""
    from torch.utils.flop_counter import FlopCounterMode

    with running_eagerly(editor):
        edit_call(editor, variant, size, call=0)()  # the cached-condition variants count a call with a warm cache
        counter = FlopCounterMode(display=False)
        with counter:
            edit_call(editor, variant, size, call=0)()
    return counter.get_total_flops() / variant.views / 1e12


def run_variant(editor: InstructPix2PixEditor, variant: Variant, size: int, repeats: int, cache_dir: Path) -> Record:
    from torch._dynamo.utils import counters

    if variant.compile:  # dynamo would reuse an earlier variant's graphs of the same step, whatever its settings
        torch._dynamo.reset()
    configure(editor, variant, cache_dir)
    editor.clear_condition_cache()
    sync()
    graphs = counters["stats"]["unique_graphs"]
    started = time.perf_counter()
    with torch._inductor.config.patch(variant.inductor):
        edit_call(editor, variant, size, call=0)()  # compiles a compiled variant; fills the condition cache
        sync()
    first = time.perf_counter() - started
    graphs = counters["stats"]["unique_graphs"] - graphs
    for call in range(1, 4 if variant.compile else 2):  # warm: conditions cached, graphs recorded
        edit_call(editor, variant, size, call)()
    sync()
    reset_peak()
    times = []
    for call in range(repeats):
        fn = edit_call(editor, variant, size, call)
        sync()
        t0 = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - t0)
        assert out.shape == (variant.views, 3, size, size) and bool(torch.isfinite(out).all()), variant.name
    peak = peak_gib()
    tflop = count_tflop(editor, variant, size)
    pieces = breakdown(editor, variant.views, size) if variant.name in BREAKDOWN else {}
    kernels = step_kernels(editor, variant.views, size) if variant.name in KERNELS else {}
    unconfigure(editor, variant)
    per_call = statistics.median(times)
    return Record(
        name=variant.name,
        note=variant.note,
        views=variant.views,
        ms_per_call=1000 * per_call,
        ms_per_view=1000 * per_call / variant.views,
        ms_per_view_all=[1000 * t / variant.views for t in times],
        tflop_per_view=tflop,
        peak_gib=peak,
        first_call_s=first,
        extra={
            "compiled_graphs": graphs,
            **({"breakdown": pieces} if pieces else {}),
            **({"step_kernels": kernels} if kernels else {}),
        },
    )


BREAKDOWN: set[str] = set()
"""Variants whose edit is also timed piece by piece (--breakdown)."""


def edit_pieces(editor: InstructPix2PixEditor, views: int, size: int) -> dict[str, Callable[[], Any]]:
    """The pieces of a `views`-view edit as configured, on fixed random inputs: VAE encode of the renders, one
    denoising step, the VAE decode."""
    renders, _ = inputs(views, size, seed=0)
    latent_size = size // editor.vae_scale_factor
    latent = torch.randn(views, 4, latent_size, latent_size, device=DEVICE)
    condition = torch.randn(3 * views, 4, latent_size, latent_size, device=DEVICE, dtype=editor.dtype)
    text = editor.encode_prompt(PROMPT).repeat_interleave(views, dim=0)
    t = torch.full((3 * views,), 500, device=DEVICE, dtype=torch.long)
    guidance = torch.tensor([12.5, 1.5], device=DEVICE)
    factors = torch.rand(4, views, device=DEVICE) * 0.5 + 0.25
    pieces = {
        "encode_renders": lambda: editor.encode_images(renders),
        "denoise_step": lambda: editor._step(latent, condition, text, t, guidance, factors, 0.0),
        "decode": lambda: editor.decode_latents(latent),
    }
    return {name: torch.no_grad()(fn) for name, fn in pieces.items()}  # as in an edit: no autograd graph


def median_ms(fn: Callable[[], Any], warmup: int = 3, repeats: int = 10) -> float:
    """Median device milliseconds of fn after `warmup` calls."""
    for _ in range(warmup):
        fn()
    return statistics.median(event_ms(fn) for _ in range(repeats))


def breakdown(editor: InstructPix2PixEditor, views: int, size: int) -> dict:
    """ms of the pieces of a `views`-view edit as configured (`edit_pieces`), and the edit per view they add up
    to (20 steps)."""
    out = {name + "_ms": median_ms(fn) for name, fn in edit_pieces(editor, views, size).items()}
    out["edit_ms_per_view_from_pieces"] = (
        out["encode_renders_ms"] + 20 * out["denoise_step_ms"] + out["decode_ms"]
    ) / views
    return out


KERNEL_KINDS = (
    ("attention", ("fmha", "flash", "sdpa", "attention")),
    ("convolution", ("conv", "fprop", "implicit")),
    ("matmul", ("gemm", "nvjet", "cutlass", "cublas")),
    ("triton (fused by inductor)", ("triton",)),
)
"""Kernel families, told apart by substrings of the kernel's name (first match wins; the rest is "other")."""


def kernel_kind(name: str) -> str:
    lowered = name.lower()
    return next((kind for kind, keys in KERNEL_KINDS if any(k in lowered for k in keys)), "other")


def kernel_table(fn: Callable[[], Any], rows: int) -> tuple[float, int, list[dict[str, Any]], dict[str, float]]:
    """Summed kernel time (ms) and kernel count of one call of fn, its `rows` most expensive kernels, and the
    kernel time (ms) of each family of `KERNEL_KINDS`."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as prof:
        fn()
        sync()
    kernels = [e for e in prof.key_averages() if e.device_type.name == "CUDA" and e.self_device_time_total > 0]
    kernels.sort(key=lambda e: e.self_device_time_total, reverse=True)
    total_ms = sum(e.self_device_time_total for e in kernels) / 1000
    count = sum(e.count for e in kernels)
    top = [{"kernel": e.key[:110], "calls": e.count, "ms": e.self_device_time_total / 1000} for e in kernels[:rows]]
    kinds: dict[str, float] = {}
    for e in kernels:
        kind = kernel_kind(e.key)
        kinds[kind] = kinds.get(kind, 0.0) + e.self_device_time_total / 1000
    return total_ms, count, top, kinds


KERNELS: set[str] = set()
"""Variants whose denoising step is also profiled kernel by kernel (--kernels)."""


def step_kernels(editor: InstructPix2PixEditor, views: int, size: int, rows: int = 25) -> dict[str, Any]:
    """The kernels of one `views`-view denoising step as configured (compiled or not): time by family, top rows."""
    step = edit_pieces(editor, views, size)["denoise_step"]
    event_ms = median_ms(step)  # warms the step up before the profiled call too
    kernel_ms, count, top, kinds = kernel_table(step, rows)
    return {"event_ms": event_ms, "kernel_ms": kernel_ms, "kernels": count, "by_kind_ms": kinds, "top": top}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", type=Path, default=DEFAULT_ARCH)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--variants", default=DEFAULT_VARIANTS)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--original-repeats", type=int, default=4)
    parser.add_argument("--breakdown", default="", help="variants also timed piece by piece, e.g. batch8-compiled")
    parser.add_argument("--kernels", default="", help="variants whose denoising step is profiled kernel by kernel")
    parser.add_argument("--compile-cache", type=Path, default=Path("~/.cache/igs2gs/torchinductor"))
    parser.add_argument("--smoke", action="store_true", help="check this script on the CPU with the tiny model")
    args = parser.parse_args()
    from diffusers import DDIMScheduler

    global DEVICE
    if args.smoke:
        from tests.tiny_ip2p import tiny_components

        DEVICE = "cpu"
        torch.set_num_threads(1)  # the tiny model gains nothing from threads; busy CPUs make them spin
        parts, dtype, card = tiny_components(), torch.float32, "cpu (smoke test, tiny model)"
    else:
        parts, dtype, card = (
            build_arch_components(args.arch, device="cuda"),
            torch.float16,
            torch.cuda.get_device_name(0),
        )
    record: dict[str, Any] = {"card": card, "torch": torch.__version__, "size": args.size}
    record["matmul_peak_tflops"] = {"float16": matmul_peak(torch.float16), "bfloat16": matmul_peak(torch.bfloat16)}
    print(json.dumps(record), flush=True)
    parts["scheduler"] = DDIMScheduler.from_config(parts["scheduler"].config)
    editor = InstructPix2PixEditor(**parts, device=DEVICE, dtype=dtype)
    del parts
    record["variants"] = []
    BREAKDOWN.update(filter(None, args.breakdown.split(",")))
    KERNELS.update(filter(None, args.kernels.split(",")))
    for name in args.variants.split(","):
        variant = VARIANTS[name]
        repeats = args.original_repeats if variant.memory_savers else args.repeats
        started = time.perf_counter()
        result = run_variant(editor, variant, args.size, repeats, args.compile_cache)
        result.extra["variant_wall_s"] = time.perf_counter() - started
        record["variants"].append(result.__dict__)
        print(json.dumps(result.__dict__), flush=True)
        args.out.write_text(json.dumps(record, indent=2))
    print_table(record)


def print_table(record: dict) -> None:
    peak16, peak_bf16 = record["matmul_peak_tflops"]["float16"], record["matmul_peak_tflops"]["bfloat16"]
    base = next((v["ms_per_view"] for v in record["variants"] if v["name"] == "original"), None)
    print(f"\n{record['card']}, {record['size']} px, 20 steps; matmul peak fp16 {peak16:.0f}, bf16 {peak_bf16:.0f}")
    print(f"{'variant':18s} {'views':>5s} {'ms/view':>8s} {'speed-up':>8s} {'TFLOP/s':>8s} {'%bf16pk':>8s} "
          f"{'peak GiB':>8s} {'1st call s':>10s}")  # fmt: skip
    for v in record["variants"]:
        rate = v["tflop_per_view"] / (v["ms_per_view"] / 1000)
        speedup = f"{base / v['ms_per_view']:.1f}x" if base else "-"
        print(f"{v['name']:18s} {v['views']:5d} {v['ms_per_view']:8.1f} {speedup:>8s} {rate:8.0f} "
              f"{100 * rate / peak_bf16:7.0f}% {v['peak_gib']:8.2f} {v['first_call_s']:10.1f}")  # fmt: skip
    for v in record["variants"]:
        kernels = v["extra"].get("step_kernels")
        if not kernels:
            continue
        print(f"\n{v['name']}: one denoising step, {kernels['event_ms']:.2f} ms (events), "
              f"{kernels['kernel_ms']:.2f} ms in {kernels['kernels']} kernels")  # fmt: skip
        for kind, ms in sorted(kernels["by_kind_ms"].items(), key=lambda kv: -kv[1]):
            print(f"  {kind:28s} {ms:8.2f} ms {100 * ms / kernels['kernel_ms']:5.1f} %")
        for row in kernels["top"]:
            print(f"  {row['ms']:8.3f} ms {row['calls']:4d}x {row['kernel']}")


if __name__ == "__main__":
    main()
