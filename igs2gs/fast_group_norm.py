"""GroupNorm for few groups of many elements: the statistics from reductions that spread over the whole GPU.

torch's CUDA GroupNorm computes each (sample, group) statistic in one thread block. InstructPix2Pix's VAE
normalises one 512 px image at a time in 32 groups of up to a million elements, so 32 blocks run on a GPU
of 132 multiprocessors: on an H200 the statistics kernel was 43 % of the VAE's time (benchmarks/RESULTS.md).
Here the mean and variance come from torch's general reductions, which split long rows across blocks:

    mean = E[x] (float32 accumulation), var = E[(x - mean16)^2] - (mean - mean16)^2 (float32 accumulation)

where mean16 is the mean rounded to the input's precision, so the centred values are exact and the variance
has no cancellation. The output is `centred * (rstd * weight) + (bias + (mean16 - mean) * rstd * weight)`,
the same arithmetic as torch's up to rounding. Small inputs and the CPU keep torch's kernel.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

MAX_ROWS = 512
"""Use the reductions when (batch x groups) is below this: enough rows keep torch's kernel busy."""
MIN_ROW = 32768
"""... and each group holds at least this many elements."""


def splits_better(x: Tensor, num_groups: int) -> bool:
    """True when torch's kernel would leave most of the GPU idle for this input."""
    rows = x.shape[0] * num_groups
    return x.is_cuda and rows < MAX_ROWS and x.numel() // max(rows, 1) >= MIN_ROW


def group_norm(
    x: Tensor,  # [N, C, *]
    num_groups: int,
    weight: Optional[Tensor] = None,  # [C]
    bias: Optional[Tensor] = None,  # [C]
    eps: float = 1e-5,
) -> Tensor:  # like x
    """`torch.nn.functional.group_norm` with its statistics from row reductions (see the module docstring)."""
    n, c = x.shape[:2]
    grouped = x.reshape(n, num_groups, -1)
    acc = torch.promote_types(x.dtype, torch.float32)  # float32 accumulation for half precision
    mean = grouped.mean(dim=-1, dtype=acc)  # [N, G]
    mean_low = mean.to(x.dtype)
    centred = grouped - mean_low[..., None]
    offset = mean - mean_low.to(acc)  # what rounding the mean left in the centred values
    var = torch.linalg.vector_norm(centred, dim=-1, dtype=acc).square() / grouped.shape[-1] - offset.square()
    rstd = torch.rsqrt(var.clamp_min(0) + eps)  # [N, G]
    per_channel = c // num_groups
    scale = rstd.repeat_interleave(per_channel, dim=1)  # [N, C]
    shift = -offset.repeat_interleave(per_channel, dim=1) * scale
    if weight is not None:
        scale = scale * weight.to(acc)
        shift = shift * weight.to(acc)
    if bias is not None:
        shift = shift + bias.to(acc)
    view = (n, c) + (1,) * (x.dim() - 2)
    out = torch.addcmul(shift.to(x.dtype).view(view), centred.view(x.shape), scale.to(x.dtype).view(view))
    return out


class FastGroupNorm(nn.GroupNorm):
    """`nn.GroupNorm` that takes `group_norm` above where torch's kernel would leave the GPU idle (same
    parameters and state dict)."""

    def forward(self, x: Tensor) -> Tensor:
        if not splits_better(x, self.num_groups) or not x.is_contiguous():
            return super().forward(x)
        return group_norm(x, self.num_groups, self.weight, self.bias, self.eps)


def use_fast_group_norm(module: nn.Module) -> int:
    """Turn every `nn.GroupNorm` inside `module` into a `FastGroupNorm` (in place); return how many."""
    count = 0
    for child in module.modules():
        if type(child) is nn.GroupNorm:
            child.__class__ = FastGroupNorm
            count += 1
    return count


def use_torch_group_norm(module: nn.Module) -> None:
    """Undo `use_fast_group_norm`."""
    for child in module.modules():
        if type(child) is FastGroupNorm:
            child.__class__ = nn.GroupNorm
