"""Pure-PyTorch version of `gsplat.rendering.rasterization` (gsplat 1.4.0), for machines without CUDA.

`rasterization_torch` takes the same arguments and returns the same `(render_colors, render_alphas, meta)` as
gsplat's `rasterization`, so nerfstudio's splatfacto can train, render and export on a CPU (see `cpu_fallback.py`,
which picks the backend at call time). It also runs on CUDA tensors, which `benchmarks/compare_rasterizers.py` uses to
compare it with gsplat's kernels.

How it works:

- Projection reuses gsplat's own PyTorch reference helpers (`gsplat.cuda._torch_impl`: `_quat_scale_to_covar_preci`,
  `_world_to_cam`, `_persp_proj` / `_ortho_proj` / `_fisheye_proj`, `_spherical_harmonics`), with the validity rules
  of the CUDA projection kernel (depth range, positive blurred determinant, `radius_clip`, 3-sigma radius overlapping
  the image), which `_torch_impl._fully_fused_projection` only partly applies.
- Compositing is written here, because `_torch_impl._rasterize_to_pixels` calls a CUDA kernel and `accumulate`
  needs nerfacc's CUDA ops. The image is split into gsplat's tiles; each tile gets the depth-sorted list of the
  Gaussians whose 3-sigma square overlaps it (gsplat's `isect_tiles`), and a group of tiles is composited at once as
  dense `[tiles, pixels, Gaussians]` tensors, front to back: `sigma` at pixel centres (`+0.5`),
  `alpha = min(0.999, opacity * exp(-sigma))`, Gaussians with `alpha < 1/255` or `sigma < 0` skipped, exclusive
  cumulative-product transmittance, and a pixel stops taking Gaussians where its transmittance would drop to 1e-4,
  as gsplat's kernel does.
- Gradients come from PyTorch's autograd. Tile groups are sized to an element budget; when there are several, each
  group runs under activation checkpointing, so memory stays bounded in the backward pass too.

.. note::
    This is slow: it is meant for tiny scenes (tens of views of about 64 px, a few thousand Gaussians) and for tests.
    A 64x64 render plus backward of 5k Gaussians takes about 0.1 to 0.2 s on two CPU cores, thousands of times what
    gsplat's CUDA kernels take on a GPU. Memory grows with pixels x Gaussians per tile, up to `CHUNK_ELEMENTS`.

.. note::
    Differences from the CUDA path: `absgrad` is emulated (see `rasterization_torch`); `sparse_grad=True` and
    `distributed=True` are not supported; `channel_chunk` is ignored (all channels are composited at once, which gives
    the same result); `meta` holds `None` for the tile-intersection buffers (`isect_ids`, `flatten_ids`,
    `isect_offsets`). Values may differ from the CUDA kernels by float32 rounding, which can flip a Gaussian across
    one of the thresholds above.
"""

from __future__ import annotations

import math
import weakref
from typing import Literal

import torch
from gsplat.cuda._torch_impl import (
    _fisheye_proj,
    _ortho_proj,
    _persp_proj,
    _quat_scale_to_covar_preci,
    _spherical_harmonics,
    _world_to_cam,
)
from torch import Tensor
from torch.utils.checkpoint import checkpoint
from typing_extensions import assert_never

# Largest number of (pixel, Gaussian) pairs composited at once. Memory is about 15 such tensors for one tile group
# (saved for the backward pass, or recomputed under checkpointing when the image needs several groups).
CHUNK_ELEMENTS: dict[str, int] = {"cpu": 2**22, "cuda": 2**25}
# Largest (tile, Gaussian) boolean mask built at once when listing the Gaussians of each tile.
HIT_MASK_ELEMENTS = 2**26
# Gaussians composited per depth slice of a tile group, growing from the first to the largest size; compositing ends
# early once all pixels have stopped.
DEPTH_SLICE_FIRST = 32
DEPTH_SLICE = 256

ALPHA_MAX = 0.999  # gsplat clamps alpha to this value
ALPHA_MIN = 1.0 / 255.0  # gsplat skips Gaussians below this alpha
TRANSMITTANCE_MIN = 1e-4  # gsplat stops a pixel before its transmittance drops to this value
SIGMA_MAX = 50.0  # exp(-50) * opacity is far below ALPHA_MIN for any opacity <= 1


def _project(
    means: Tensor,  # [N, 3]
    covars: Tensor,  # [N, 3, 3]
    viewmats: Tensor,  # [C, 4, 4]
    Ks: Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    eps2d: float,
    near_plane: float,
    far_plane: float,
    radius_clip: float,
    calc_compensations: bool,
    camera_model: Literal["pinhole", "ortho", "fisheye"],
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None]:
    """Project Gaussians to the image planes, like gsplat's `fully_fused_projection` with `packed=False`.

    Returns radii [C, N] int32, means2d [C, N, 2], depths [C, N], conics [C, N, 3] and compensations [C, N] (or
    None). Entries with radius 0 are invalid and zeroed, as in gsplat.
    """
    means_c, covars_c = _world_to_cam(means, covars, viewmats)  # [C, N, 3], [C, N, 3, 3]
    depths = means_c[..., 2]  # [C, N]
    with torch.no_grad():
        valid = (depths >= near_plane) & (depths <= far_plane)  # [C, N]
    # Gaussians outside the depth range are dropped, but projecting them would still divide by a depth near zero,
    # and in the backward pass 0 * inf turns their zero gradient into NaN. Project a harmless point in their place.
    safe_point = torch.tensor([0.0, 0.0, 1.0], device=means.device, dtype=means.dtype)
    means_c = torch.where(valid[..., None], means_c, safe_point)  # [C, N, 3]

    if camera_model == "pinhole":
        means2d, covars2d = _persp_proj(means_c, covars_c, Ks, width, height)
    elif camera_model == "ortho":
        means2d, covars2d = _ortho_proj(means_c, covars_c, Ks, width, height)
    elif camera_model == "fisheye":
        means2d, covars2d = _fisheye_proj(means_c, covars_c, Ks, width, height)
    else:
        assert_never(camera_model)
    # means2d [C, N, 2], covars2d [C, N, 2, 2]

    a, b, c = covars2d[..., 0, 0], 0.5 * (covars2d[..., 0, 1] + covars2d[..., 1, 0]), covars2d[..., 1, 1]
    det_orig = a * c - b * b  # [C, N]
    a, c = a + eps2d, c + eps2d  # screen-space blur, as gsplat's `add_blur`
    det = a * c - b * b  # [C, N]
    with torch.no_grad():
        valid = valid & (det > 0)
    det = torch.where(valid, det, torch.ones_like(det))
    conics = torch.stack([c / det, -b / det, a / det], dim=-1)  # [C, N, 3]
    compensations = None
    if calc_compensations:
        ratio = torch.where(valid, det_orig / det, torch.ones_like(det))
        compensations = torch.sqrt(ratio.clamp_min(0.0))  # [C, N]

    with torch.no_grad():
        # 3-sigma radius of the larger eigenvalue (not differentiable), as gsplat's projection kernel.
        half_trace = 0.5 * (a + c)
        v1 = half_trace + torch.sqrt((half_trace * half_trace - det).clamp_min(0.01))
        radius = torch.ceil(3.0 * torch.sqrt(v1))  # [C, N]
        valid = valid & (radius > radius_clip)
        x, y = means2d[..., 0], means2d[..., 1]
        valid = valid & ((x + radius > 0) & (x - radius < width) & (y + radius > 0) & (y - radius < height))
        radii = torch.where(valid, radius, torch.zeros_like(radius)).int()  # [C, N]

    means2d = torch.where(valid[..., None], means2d, torch.zeros_like(means2d))
    depths = torch.where(valid, depths, torch.zeros_like(depths))
    conics = torch.where(valid[..., None], conics, torch.zeros_like(conics))
    if compensations is not None:
        compensations = torch.where(valid, compensations, torch.zeros_like(compensations))
    return radii, means2d, depths, conics, compensations


def _composite_slice(
    means2d: Tensor,  # [G, K, 2]
    conics: Tensor,  # [G, K, 3]
    opacities: Tensor,  # [G, K]
    px: Tensor,  # [G, S], pixel-centre x of each column of the tiles
    py: Tensor,  # [G, S], pixel-centre y of each row
    trans: Tensor,  # [G, P], transmittance in front of this slice, P = S * S
    done: Tensor,  # [G, P] bool, pixels that already stopped
) -> tuple[Tensor, Tensor, Tensor]:
    """Blend weights [G, P, K] of one depth slice, then the transmittance behind it and the stopped pixels [G, P]."""
    n_tiles, n_gauss = opacities.shape
    # Pixel coordinates factor into columns and rows, so the deltas are [G, S, K] and only sigma is full size.
    dx = means2d[:, None, :, 0] - px[:, :, None]  # [G, S(col), K]
    dy = means2d[:, None, :, 1] - py[:, :, None]  # [G, S(row), K]
    sigma_x = 0.5 * conics[:, None, :, 0] * dx * dx  # [G, S(col), K]
    sigma_y = 0.5 * conics[:, None, :, 2] * dy * dy  # [G, S(row), K]
    cross_y = conics[:, None, :, 1] * dy  # [G, S(row), K]
    sigma = sigma_y[:, :, None] + sigma_x[:, None] + cross_y[:, :, None] * dx[:, None]  # [G, row, col, K]
    sigma = sigma.reshape(n_tiles, -1, n_gauss)  # [G, P, K]

    # Beyond SIGMA_MAX alpha is far below 1/255 and skipped anyway; clamping keeps exp() out of the subnormal range.
    alpha = torch.clamp_max(opacities[:, None, :] * torch.exp(-sigma.clamp_max(SIGMA_MAX)), ALPHA_MAX)  # [G, P, K]
    with torch.no_grad():
        skip = (sigma < 0) | (alpha < ALPHA_MIN) | done[..., None]
        # gsplat stops a pixel at the first Gaussian whose next transmittance is <= 1e-4, excluding it. Transmittance
        # only falls, so the Gaussians taken are those with transmittance > 1e-4 after them. Decide it in log space:
        # a running product would sink into subnormal floats behind opaque pixels, which are very slow on CPUs.
        log_trans = torch.cumsum(torch.log1p(-alpha.masked_fill(skip, 0.0)), dim=-1) + torch.log(trans)[..., None]
        stopped = log_trans <= math.log(TRANSMITTANCE_MIN)  # [G, P, K]
    alpha = alpha.masked_fill(skip | stopped, 0.0)
    trans_incl = trans[..., None] * torch.cumprod(1.0 - alpha, dim=-1)  # [G, P, K], after each Gaussian, >= 1e-4
    trans_excl = torch.cat([trans[..., None], trans_incl[..., :-1]], dim=-1)  # [G, P, K], in front of each
    return alpha * trans_excl, trans_incl[..., -1], done | stopped[..., -1]


def _composite_tiles(
    means2d: Tensor,  # [M + 1, 2], last row is padding
    conics: Tensor,  # [M + 1, 3]
    opacities: Tensor,  # [M + 1], padding has opacity 0
    colors: Tensor,  # [M + 1, D]
    lists: Tensor,  # [G, K] int64, depth-sorted rows into the arrays above, padded with M
    tile_x0: Tensor,  # [G], left pixel of each tile
    tile_y0: Tensor,  # [G], top pixel of each tile
    tile_size: int,
) -> tuple[Tensor, Tensor]:
    """Front-to-back alpha compositing of G tiles; returns colors [G, P, D] and alphas [G, P], P = tile_size**2.

    The Gaussians go in depth slices (`DEPTH_SLICE_FIRST`, doubling up to `DEPTH_SLICE`), and compositing ends once
    every pixel of the group has stopped, as gsplat's kernel ends a tile, so the cost follows the visible depth, not
    the number of Gaussians.
    """
    n_tiles, n_pixels = lists.shape[0], tile_size * tile_size
    centres = torch.arange(tile_size, device=means2d.device, dtype=means2d.dtype) + 0.5  # [S]
    px = tile_x0.to(means2d.dtype)[:, None] + centres  # [G, S]
    py = tile_y0.to(means2d.dtype)[:, None] + centres  # [G, S]
    trans = means2d.new_ones(n_tiles, n_pixels)  # [G, P]
    done = torch.zeros((n_tiles, n_pixels), dtype=torch.bool, device=means2d.device)  # [G, P]
    render, alphas = 0.0, 0.0
    start, size = 0, DEPTH_SLICE_FIRST
    while start < lists.shape[1]:
        ids = lists[:, start : start + size]  # [G, k]
        weights, trans, done = _composite_slice(means2d[ids], conics[ids], opacities[ids], px, py, trans, done)
        render = render + torch.bmm(weights, colors[ids])  # [G, P, D]
        alphas = alphas + weights.sum(dim=-1)  # [G, P]
        start, size = start + size, min(2 * size, DEPTH_SLICE)
        if start < lists.shape[1] and bool(done.all()):
            break
    return render, alphas


def _tile_ranges(
    means2d: Tensor,  # [M, 2]
    radii: Tensor,  # [M]
    tile_size: int,
    tile_width: int,
    tile_height: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Tiles touched by each Gaussian's 3-sigma square, as gsplat's `isect_tiles`: [x0, x1) x [y0, y1), int64 [M]."""
    tile_radius = radii.to(means2d.dtype) / tile_size
    tx, ty = means2d[:, 0] / tile_size, means2d[:, 1] / tile_size
    x0 = torch.floor(tx - tile_radius).clamp(0, tile_width).long()
    x1 = torch.ceil(tx + tile_radius).clamp(0, tile_width).long()
    y0 = torch.floor(ty - tile_radius).clamp(0, tile_height).long()
    y1 = torch.ceil(ty + tile_radius).clamp(0, tile_height).long()
    return x0, x1, y0, y1


def _count_per_tile(x0: Tensor, x1: Tensor, y0: Tensor, y1: Tensor, tile_width: int, tile_height: int) -> Tensor:
    """Number of Gaussians overlapping each tile [tile_height * tile_width], from a 2D difference array."""
    diff = torch.zeros((tile_height + 1, tile_width + 1), dtype=torch.int64, device=x0.device)
    ones = torch.ones_like(x0)
    diff.index_put_((y0, x0), ones, accumulate=True)
    diff.index_put_((y0, x1), -ones, accumulate=True)
    diff.index_put_((y1, x0), -ones, accumulate=True)
    diff.index_put_((y1, x1), ones, accumulate=True)
    return diff.cumsum(0).cumsum(1)[:tile_height, :tile_width].reshape(-1)


def _tile_groups(counts: Tensor, n_gauss: int, pixels_per_tile: int, budget: int) -> list[Tensor]:
    """Split the non-empty tiles into groups of at most `budget` (pixel, Gaussian) pairs, padding included."""
    nonempty = torch.nonzero(counts).squeeze(1)
    # Tiles with similar counts share a group, so little of the padded [G, P, K] block is padding.
    order = nonempty[torch.argsort(counts[nonempty], descending=True, stable=True)]
    sorted_counts = counts[order].tolist()
    groups, start = [], 0
    while start < len(sorted_counts):
        largest = sorted_counts[start]  # every tile of the group is padded to its first (largest) count
        size = max(1, min(budget // (pixels_per_tile * largest), HIT_MASK_ELEMENTS // max(n_gauss, 1)))
        groups.append(order[start : start + size])
        start += size
    return groups


def _list_gaussians(
    tiles: Tensor,  # [G] tile ids
    x0: Tensor,  # [M]
    x1: Tensor,
    y0: Tensor,
    y1: Tensor,
    tile_width: int,
) -> Tensor:
    """Depth-ordered Gaussians of each tile [G, K], padded with M (Gaussians must already be sorted by depth)."""
    n_gauss = x0.shape[0]
    tx, ty = (tiles % tile_width)[:, None], (tiles // tile_width)[:, None]  # [G, 1]
    hit = (x0 <= tx) & (tx < x1) & (y0 <= ty) & (ty < y1)  # [G, M]
    counts = hit.sum(dim=1)  # [G]
    rows, cols = hit.nonzero(as_tuple=True)  # row-major: columns ascend, i.e. front to back
    starts = torch.cumsum(counts, dim=0) - counts  # [G]
    slots = torch.arange(rows.shape[0], device=rows.device) - starts[rows]
    lists = torch.full((tiles.shape[0], int(counts.max())), n_gauss, dtype=torch.int64, device=x0.device)
    lists[rows, slots] = cols
    return lists


def _rasterize_to_pixels(
    camera_ids: Tensor,  # [M] int64
    means2d: Tensor,  # [M, 2]
    conics: Tensor,  # [M, 3]
    opacities: Tensor,  # [M]
    colors: Tensor,  # [M, D]
    depths: Tensor,  # [M]
    radii: Tensor,  # [M]
    n_cameras: int,
    width: int,
    height: int,
    tile_size: int,
) -> tuple[Tensor, Tensor]:
    """Composite the visible Gaussians (radius > 0) to colors [C, H, W, D] and alphas [C, H, W, 1]."""
    device, dtype, n_channels = means2d.device, means2d.dtype, colors.shape[-1]
    tile_width, tile_height = math.ceil(width / tile_size), math.ceil(height / tile_size)
    n_tiles, pixels_per_tile = tile_width * tile_height, tile_size * tile_size
    budget = CHUNK_ELEMENTS.get(device.type, CHUNK_ELEMENTS["cpu"])

    tile_ids, tile_colors, tile_alphas = [], [], []
    for cam in range(n_cameras):
        with torch.no_grad():
            ids = torch.nonzero(camera_ids == cam).squeeze(1)  # [Mc]
            # Front to back; the stable sort keeps index order on ties, as gsplat's radix sort does.
            ids = ids[torch.argsort(depths[ids], stable=True)]
            x0, x1, y0, y1 = _tile_ranges(means2d[ids].detach(), radii[ids], tile_size, tile_width, tile_height)
            counts = _count_per_tile(x0, x1, y0, y1, tile_width, tile_height)  # [n_tiles]
            groups = _tile_groups(counts, ids.shape[0], pixels_per_tile, budget)
        if not groups:
            continue
        # Sorted per-camera arrays plus one padding Gaussian (opacity 0) that the tile lists point to.
        cam_means2d = torch.cat([means2d[ids], means2d.new_zeros(1, 2)])
        cam_conics = torch.cat([conics[ids], conics.new_zeros(1, 3)])
        cam_opacities = torch.cat([opacities[ids], opacities.new_zeros(1)])
        cam_colors = torch.cat([colors[ids], colors.new_zeros(1, n_channels)])
        # Checkpoint when there are several groups, so the backward pass keeps one group's intermediates at a time.
        use_checkpoint = len(groups) > 1 and torch.is_grad_enabled()
        for tiles in groups:
            with torch.no_grad():
                lists = _list_gaussians(tiles, x0, x1, y0, y1, tile_width)
            args = (cam_means2d, cam_conics, cam_opacities, cam_colors, lists)
            args += ((tiles % tile_width) * tile_size, (tiles // tile_width) * tile_size, tile_size)
            if use_checkpoint:
                render, alpha = checkpoint(_composite_tiles, *args, use_reentrant=False)
            else:
                render, alpha = _composite_tiles(*args)
            tile_ids.append(tiles + cam * n_tiles)
            tile_colors.append(render)
            tile_alphas.append(alpha)

    out_colors = torch.zeros((n_cameras * n_tiles, pixels_per_tile, n_channels), device=device, dtype=dtype)
    out_alphas = torch.zeros((n_cameras * n_tiles, pixels_per_tile), device=device, dtype=dtype)
    if tile_ids:
        index = torch.cat(tile_ids)
        out_colors = out_colors.index_copy(0, index, torch.cat(tile_colors))
        out_alphas = out_alphas.index_copy(0, index, torch.cat(tile_alphas))
    else:
        # Nothing visible: keep the outputs in the autograd graph (zero gradients), as gsplat's do, so that a loss on
        # an empty view can still call backward(). The sums run over empty tensors, so they are exactly 0.
        anchor = 0.0 * (means2d.sum() + conics.sum() + opacities.sum() + colors.sum())
        out_colors, out_alphas = out_colors + anchor, out_alphas + anchor
    shape = (n_cameras, tile_height, tile_width, tile_size, tile_size, -1)  # [C, tile row, tile col, row, col, D]
    out_colors = (
        out_colors.reshape(shape)
        .permute(0, 1, 3, 2, 4, 5)
        .reshape(n_cameras, tile_height * tile_size, tile_width * tile_size, n_channels)
    )
    out_alphas = (
        out_alphas.reshape(shape)
        .permute(0, 1, 3, 2, 4, 5)
        .reshape(n_cameras, tile_height * tile_size, tile_width * tile_size, 1)
    )
    return out_colors[:, :height, :width], out_alphas[:, :height, :width]


def _record_absgrad(means2d: Tensor) -> None:
    """Set `means2d.absgrad = |grad|` in the backward pass, standing in for gsplat's CUDA `absgrad`."""
    ref = weakref.ref(means2d)  # a strong reference from its own hook would keep the tensor alive

    def hook(grad: Tensor) -> None:
        tensor = ref()
        if tensor is not None:
            tensor.absgrad = grad.abs()

    means2d.register_hook(hook)


def rasterization_torch(
    means: Tensor,  # [N, 3]
    quats: Tensor,  # [N, 4]
    scales: Tensor,  # [N, 3]
    opacities: Tensor,  # [N]
    colors: Tensor,  # [(C,) N, D] or [(C,) N, K, 3]
    viewmats: Tensor,  # [C, 4, 4]
    Ks: Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
    eps2d: float = 0.3,
    sh_degree: int | None = None,
    packed: bool = True,
    tile_size: int = 16,
    backgrounds: Tensor | None = None,  # [C, D]
    render_mode: Literal["RGB", "D", "ED", "RGB+D", "RGB+ED"] = "RGB",
    sparse_grad: bool = False,
    absgrad: bool = False,
    rasterize_mode: Literal["classic", "antialiased"] = "classic",
    channel_chunk: int = 32,
    distributed: bool = False,
    camera_model: Literal["pinhole", "ortho", "fisheye"] = "pinhole",
    covars: Tensor | None = None,  # [N, 3, 3]
) -> tuple[Tensor, Tensor, dict]:
    """Rasterize 3D Gaussians (N) to C images in pure PyTorch; a slow drop-in for `gsplat.rendering.rasterization`.

    Arguments and returns are those of gsplat 1.4.0's `rasterization`: render colors [C, H, W, X] (X = D, 1 or D + 1
    by `render_mode`), render alphas [C, H, W, 1] and `meta` with `camera_ids`, `gaussian_ids`, `radii`, `means2d`,
    `depths`, `conics`, `opacities`, `tile_width`, `tile_height`, `tiles_per_gauss`, `width`, `height`, `tile_size`
    and `n_cameras` (plus `isect_ids`, `flatten_ids`, `isect_offsets`, which are None here).

    With `absgrad=True`, `meta["means2d"].absgrad` is set in the backward pass to the absolute value of the summed
    gradient of the 2D means. gsplat's CUDA backward sums the absolute per-pixel gradients instead (AbsGS), which is
    at least as large; this approximation only feeds densification (gsplat's `DefaultStrategy`) on CPU runs, where
    fewer Gaussians may cross its growth threshold. `channel_chunk` is ignored. `sparse_grad` with `packed`, and
    `distributed`, raise NotImplementedError.
    """
    n_gauss, n_cameras = means.shape[0], viewmats.shape[0]
    if distributed:
        raise NotImplementedError("rasterization_torch: distributed=True is not supported; use gsplat's CUDA backend.")
    if sparse_grad and packed:
        raise NotImplementedError(
            "rasterization_torch: sparse_grad=True is not supported (gradients are dense); pass sparse_grad=False."
        )
    assert means.shape == (n_gauss, 3), means.shape
    if covars is None:
        assert quats.shape == (n_gauss, 4), quats.shape
        assert scales.shape == (n_gauss, 3), scales.shape
        covars, _ = _quat_scale_to_covar_preci(quats, scales, compute_covar=True, compute_preci=False)
    else:
        assert covars.shape == (n_gauss, 3, 3), covars.shape
    assert opacities.shape == (n_gauss,), opacities.shape
    assert viewmats.shape == (n_cameras, 4, 4), viewmats.shape
    assert Ks.shape == (n_cameras, 3, 3), Ks.shape
    assert render_mode in ("RGB", "D", "ED", "RGB+D", "RGB+ED"), render_mode
    assert rasterize_mode in ("classic", "antialiased"), rasterize_mode
    if sh_degree is None:  # post-activation colors [N, D] or [C, N, D]
        assert (colors.dim() == 2 and colors.shape[0] == n_gauss) or (
            colors.dim() == 3 and colors.shape[:2] == (n_cameras, n_gauss)
        ), colors.shape
    else:  # SH coefficients [N, K, 3] or [C, N, K, 3]
        assert (colors.dim() == 3 and colors.shape[0] == n_gauss and colors.shape[2] == 3) or (
            colors.dim() == 4 and colors.shape[:2] == (n_cameras, n_gauss) and colors.shape[3] == 3
        ), colors.shape
        assert (sh_degree + 1) ** 2 <= colors.shape[-2], colors.shape

    radii, means2d, depths, conics, compensations = _project(
        means,
        covars,
        viewmats,
        Ks,
        width,
        height,
        eps2d=eps2d,
        near_plane=near_plane,
        far_plane=far_plane,
        radius_clip=radius_clip,
        calc_compensations=rasterize_mode == "antialiased",
        camera_model=camera_model,
    )  # [C, N], [C, N, 2], [C, N], [C, N, 3], [C, N]
    opacities = opacities.expand(n_cameras, n_gauss)  # [C, N]
    if compensations is not None:
        opacities = opacities * compensations

    if sh_degree is None:
        colors = colors.expand(n_cameras, -1, -1) if colors.dim() == 2 else colors  # [C, N, D]
    else:
        campos = torch.inverse(viewmats)[:, :3, 3]  # [C, 3]
        dirs = means[None, :, :] - campos[:, None, :]  # [C, N, 3]
        shs = colors.expand(n_cameras, -1, -1, -1) if colors.dim() == 3 else colors  # [C, N, K, 3]
        colors = _spherical_harmonics(sh_degree, dirs, shs)  # [C, N, 3]
        colors = torch.clamp_min(colors + 0.5, 0.0)  # as gsplat, to match Inria's CUDA backend

    if render_mode in ("RGB+D", "RGB+ED"):
        colors = torch.cat([colors, depths[..., None]], dim=-1)
        if backgrounds is not None:
            backgrounds = torch.cat([backgrounds, backgrounds.new_zeros(n_cameras, 1)], dim=-1)
    elif render_mode in ("D", "ED"):
        colors = depths[..., None]
        if backgrounds is not None:
            backgrounds = backgrounds.new_zeros(n_cameras, 1)

    visible = radii > 0  # [C, N]
    if packed:
        camera_ids, gaussian_ids = torch.nonzero(visible, as_tuple=True)  # [nnz], [nnz]
        radii, means2d, depths, conics = radii[visible], means2d[visible], depths[visible], conics[visible]
        opacities, colors = opacities[visible], colors[visible]  # [nnz], [nnz, D]
        flat = (camera_ids, means2d, conics, opacities, colors, depths, radii)
    else:
        camera_ids, gaussian_ids = None, None
        flat_camera_ids = torch.nonzero(visible, as_tuple=True)[0]
        flat = (flat_camera_ids, means2d[visible], conics[visible], opacities[visible], colors[visible])
        flat += (depths[visible], radii[visible])
    if absgrad and means2d.requires_grad:
        _record_absgrad(means2d)

    tile_width, tile_height = math.ceil(width / tile_size), math.ceil(height / tile_size)
    with torch.no_grad():
        x0, x1, y0, y1 = _tile_ranges(means2d.reshape(-1, 2), radii.reshape(-1), tile_size, tile_width, tile_height)
        tiles_per_gauss = ((x1 - x0) * (y1 - y0) * (radii.reshape(-1) > 0)).int().reshape(radii.shape)
    meta = {
        "camera_ids": camera_ids,
        "gaussian_ids": gaussian_ids,
        "radii": radii,
        "means2d": means2d,
        "depths": depths,
        "conics": conics,
        "opacities": opacities,
        "tile_width": tile_width,
        "tile_height": tile_height,
        "tiles_per_gauss": tiles_per_gauss,
        "isect_ids": None,
        "flatten_ids": None,
        "isect_offsets": None,
        "width": width,
        "height": height,
        "tile_size": tile_size,
        "n_cameras": n_cameras,
    }

    render_colors, render_alphas = _rasterize_to_pixels(*flat, n_cameras, width, height, tile_size)
    if backgrounds is not None:
        render_colors = render_colors + backgrounds[:, None, None, :] * (1.0 - render_alphas)
    if render_mode in ("ED", "RGB+ED"):
        # normalize the accumulated depth to get the expected depth, as gsplat
        render_colors = torch.cat(
            [render_colors[..., :-1], render_colors[..., -1:] / render_alphas.clamp(min=1e-10)], dim=-1
        )
    return render_colors, render_alphas, meta
