"""Which scaled-dot-product-attention backend runs InstructPix2Pix's attention shapes fastest on this card.

The UNet of a batched edit (8 views x 3 guidance branches = 24 samples at 512 px) runs self-attention at
64x64, 32x32, 16x16 and 8x8 latents with 8 heads of 40, 80, 160 and 160 channels, and cross-attention over 77
text tokens. Each shape is timed with each backend alone, with q, k, v laid out as diffusers' attention
processor hands them over (heads as a strided view of [B, N, heads * d]). Prints ms per call and TFLOP/s.

With `--layouts`, the 64x64 self-attention (head dim 40) is also timed with SDPA's default pick on q, k, v laid out
four ways: views of one fused projection [B, N, 3 * heads * d] (what the editor's fused QKV hands over), views of
separate projections, contiguous [B, heads, N, d], and contiguous with the head dim zero-padded to 48 and to 64 (the
scale kept at 1/sqrt(40), so the attention is the same); TFLOP/s count the unpadded work.

With `--flex`, the same shape is also timed with torch.compile'd FlexAttention (no score or mask modification, so it
computes plain attention) under its default tiles and a few other tile and warp choices, against SDPA's default pick.

    python benchmarks/bench_attention.py [--batch 24] [--layouts] [--flex] [--out OUT/bench_attention.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

HEADS = 8
SHAPES = {  # name: (query tokens, key tokens, head dim); 5 self-attention blocks per size, one at 8x8
    "self 64x64": (4096, 4096, 40),
    "self 32x32": (1024, 1024, 80),
    "self 16x16": (256, 256, 160),
    "self 8x8": (64, 64, 160),
    "cross 64x64": (4096, 77, 40),
}
BACKENDS = ["FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION"]


def strided(batch: int, tokens: int, dim: int, dtype: torch.dtype) -> torch.Tensor:
    """[B, heads, N, d] as a view of [B, N, heads * d], the layout diffusers passes to SDPA."""
    x = torch.randn(batch, tokens, HEADS * dim, device="cuda", dtype=dtype)
    return x.view(batch, tokens, HEADS, dim).transpose(1, 2)


def layouts(batch: int, dtype: torch.dtype, tokens: int = 4096, dim: int = 40) -> dict[str, dict[str, float]]:
    """ms and TFLOP/s of SDPA's default pick on one self-attention shape, by the layout of q, k, v."""
    qkv = torch.randn(batch, tokens, 3 * HEADS * dim, device="cuda", dtype=dtype)
    fused = [t.view(batch, tokens, HEADS, dim).transpose(1, 2) for t in qkv.chunk(3, dim=-1)]
    separate = [strided(batch, tokens, dim, dtype) for _ in range(3)]
    contiguous = [t.contiguous() for t in fused]
    cases = {"fused-qkv views": fused, "separate views": separate, "contiguous heads": contiguous}
    for padded in (48, 64):
        cases[f"contiguous, head dim padded to {padded}"] = [F.pad(t, (0, padded - dim)) for t in contiguous]
    flop = 4 * batch * HEADS * tokens * tokens * dim
    reference = F.scaled_dot_product_attention(*contiguous)
    out = {}
    for name, (q, k, v) in cases.items():
        call = lambda q=q, k=k, v=v: F.scaled_dot_product_attention(q, k, v, scale=dim**-0.5)  # noqa: E731
        ms = time_ms(call)
        error = (call()[..., :dim].float() - reference.float()).abs().max().item()
        out[name] = {**timing(ms, flop), "max_diff": error}
        show_64x64(batch, name, out[name])
    return out


FLEX_OPTIONS = [  # kernel_options for flex_attention; None: its own pick
    None,
    {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 8, "num_stages": 2},
    {"BLOCK_M": 128, "BLOCK_N": 128, "num_warps": 8, "num_stages": 2},
    {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 4, "num_stages": 3},
    {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 4, "num_stages": 3},
]


def flex(batch: int, dtype: torch.dtype, tokens: int = 4096, dim: int = 40) -> dict[str, dict]:
    """ms and TFLOP/s of compiled FlexAttention on one self-attention shape, against SDPA's default pick."""
    from torch.nn.attention.flex_attention import flex_attention

    q, k, v = (torch.randn(batch, HEADS, tokens, dim, device="cuda", dtype=dtype) for _ in range(3))
    flop = 4 * batch * HEADS * tokens * tokens * dim
    reference = F.scaled_dot_product_attention(q, k, v)
    out = {"sdpa default": timing(time_ms(lambda: F.scaled_dot_product_attention(q, k, v)), flop)}
    show_64x64(batch, "sdpa default", out["sdpa default"])
    for options in FLEX_OPTIONS:
        name = "flex " + (json.dumps(options) if options else "default tiles")
        try:
            torch._dynamo.reset()
            compiled = torch.compile(flex_attention, dynamic=False)
            call = lambda compiled=compiled, options=options: compiled(q, k, v, kernel_options=options)  # noqa: E731
            error = (call().float() - reference.float()).abs().max().item()
            ms = time_ms(call)
            out[name] = {**timing(ms, flop), "max_diff": error}
        except Exception as err:  # noqa: BLE001 - a tile choice the kernel refuses is a result, not a failure
            out[name] = {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"}
        show_64x64(batch, name, out[name])
    return out


def show_64x64(batch: int, name: str, row: dict) -> None:
    """Print one row of the 64x64 self-attention comparisons as it is measured."""
    print(f"self 64x64, batch {batch}, {name}: {json.dumps(row)}", flush=True)


def timing(ms: float, flop: int) -> dict[str, float]:
    """A timed call's row: ms per call and the TFLOP/s it reaches."""
    return {"ms": round(ms, 4), "tflops": round(flop / ms / 1e9, 1)}


def time_ms(fn, repeats: int = 20) -> float:
    for _ in range(3):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=24)
    parser.add_argument("--dtype", default="float16", choices=["float16", "bfloat16"])
    parser.add_argument("--layouts", action="store_true", help="also time the 64x64 self-attention by layout")
    parser.add_argument("--flex", action="store_true", help="also time compiled FlexAttention on the 64x64 shape")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    record = {"card": torch.cuda.get_device_name(0), "torch": torch.__version__, "batch": args.batch, "shapes": {}}
    for name, (nq, nk, dim) in SHAPES.items():
        q = strided(args.batch, nq, dim, dtype)
        k, v = strided(args.batch, nk, dim, dtype), strided(args.batch, nk, dim, dtype)
        flop = 4 * args.batch * HEADS * nq * nk * dim
        reference = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
        row = {}
        for backend in BACKENDS:
            try:
                with sdpa_kernel([getattr(SDPBackend, backend)]):
                    out = F.scaled_dot_product_attention(q, k, v)
                    ms = time_ms(lambda q=q, k=k, v=v: F.scaled_dot_product_attention(q, k, v))
                error = (out.float() - reference).abs().max().item()
                row[backend] = {**timing(ms, flop), "max_err": error}
            except RuntimeError as err:
                row[backend] = {"error": str(err).splitlines()[0][:160]}
        with torch.no_grad():
            row["default"] = {"ms": round(time_ms(lambda q=q, k=k, v=v: F.scaled_dot_product_attention(q, k, v)), 4)}
        record["shapes"][name] = row
        print(name, json.dumps(row), flush=True)
    if args.layouts:
        with torch.no_grad():
            record["layouts"] = {b: layouts(b, dtype) for b in (args.batch, 2 * args.batch)}
    if args.flex:
        with torch.no_grad():
            record["flex"] = {b: flex(b, dtype) for b in (args.batch, 2 * args.batch)}
    if args.out:
        args.out.write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
