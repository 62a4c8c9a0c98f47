"""The pure-PyTorch rasterizer against a brute-force reference, and splatfacto on CPU through the fallback.

The reference below is written independently of `igs2gs.cpu_rasterizer` and of gsplat's helpers: float64, the
projection written out from the EWA formulas, and compositing as a sequential loop over depth-sorted Gaussians
(vectorized over pixels), with gsplat 1.4.0's kernel rules (tile culling by the 3-sigma radius, alpha clamped to
0.999, alpha < 1/255 and sigma < 0 skipped, stop before transmittance drops to 1e-4, pixel centres at +0.5).
"""

from __future__ import annotations

import math
import types

import pytest
import torch

from igs2gs import cpu_rasterizer
from igs2gs.cpu_rasterizer import rasterization_torch

WIDTH, HEIGHT = 40, 28  # 3 x 2 tiles of 16 px, the last ones partial
N_GAUSS = 120
RENDER_MODES = ["RGB", "D", "ED", "RGB+D", "RGB+ED"]

# SH basis constants (real spherical harmonics, the convention of the Inria 3DGS code that gsplat follows).
SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
SH_C3 = (
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
)


# ----------------------------------------------------------------------------------------------------------------------
# Reference
# ----------------------------------------------------------------------------------------------------------------------


def _ref_sh_to_rgb(degree: int, dirs: torch.Tensor, sh: torch.Tensor) -> torch.Tensor:
    """Evaluate SH coefficients sh [N, K, 3] in unit directions dirs [N, 3] -> [N, 3]."""
    x, y, z = (dirs / dirs.norm(dim=-1, keepdim=True)).unbind(-1)
    bases = [torch.full_like(x, SH_C0)]
    if degree >= 1:
        bases += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        bases += [
            SH_C2[0] * x * y,
            SH_C2[1] * y * z,
            SH_C2[2] * (2 * zz - xx - yy),
            SH_C2[3] * x * z,
            SH_C2[4] * (xx - yy),
        ]
    if degree >= 3:
        bases += [
            SH_C3[0] * y * (3 * xx - yy),
            SH_C3[1] * x * y * z,
            SH_C3[2] * y * (4 * zz - xx - yy),
            SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy),
            SH_C3[4] * x * (4 * zz - xx - yy),
            SH_C3[5] * z * (xx - yy),
            SH_C3[6] * x * (xx - 3 * yy),
        ]
    basis = torch.stack(bases, dim=-1)  # [N, (degree + 1) ** 2]
    return (basis[..., None] * sh[:, : basis.shape[-1]]).sum(dim=1)


def _ref_covariances(quats: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """World covariances R S S R^T [N, 3, 3] from wxyz quaternions and scales."""
    w, x, y, z = (quats / quats.norm(dim=-1, keepdim=True)).unbind(-1)
    rot = torch.stack(
        [
            torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            torch.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            torch.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        dim=-2,
    )
    m = rot * scales[:, None, :]
    return m @ m.transpose(1, 2)


def reference_rasterization(
    means, quats, scales, opacities, colors, viewmats, Ks, width, height, *, sh_degree, render_mode, backgrounds,
    rasterize_mode, near_plane=0.01, far_plane=1e10, eps2d=0.3, tile_size=16, tile_culling=True,
):  # fmt: skip
    """Brute-force render -> colors [C, H, W, X], alphas [C, H, W, 1], radii [C, N], means2d [C, N, 2], and the
    number of pixels that stopped early (transmittance would drop to 1e-4)."""
    covars = _ref_covariances(quats, scales)
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    px, py = xs.reshape(-1).to(means) + 0.5, ys.reshape(-1).to(means) + 0.5  # [P]
    pixel_tile_x, pixel_tile_y = xs.reshape(-1) // tile_size, ys.reshape(-1) // tile_size
    out_colors, out_alphas, out_radii, out_means2d, n_stopped = [], [], [], [], 0
    for cam in range(viewmats.shape[0]):
        rot, trans = viewmats[cam, :3, :3], viewmats[cam, :3, 3]
        fx, fy, cx, cy = Ks[cam, 0, 0], Ks[cam, 1, 1], Ks[cam, 0, 2], Ks[cam, 1, 2]
        p_cam = means @ rot.T + trans  # [N, 3]
        cov_cam = rot @ covars @ rot.T  # [N, 3, 3]
        x, y, z = p_cam.unbind(-1)
        in_depth = (z >= near_plane) & (z <= far_plane)
        z_safe = torch.where(in_depth, z, torch.ones_like(z))
        u, v = fx * x / z_safe + cx, fy * y / z_safe + cy  # [N]
        # EWA Jacobian, with x/z and y/z clamped to 1.3 times the half field of view as gsplat does.
        lim_x_pos, lim_x_neg = (width - cx) / fx + 0.15 * width / fx, cx / fx + 0.15 * width / fx
        lim_y_pos, lim_y_neg = (height - cy) / fy + 0.15 * height / fy, cy / fy + 0.15 * height / fy
        tx = z_safe * torch.minimum(torch.maximum(x / z_safe, -lim_x_neg), lim_x_pos)
        ty = z_safe * torch.minimum(torch.maximum(y / z_safe, -lim_y_neg), lim_y_pos)
        zeros = torch.zeros_like(z)
        jac = torch.stack(
            [
                torch.stack([fx / z_safe, zeros, -fx * tx / z_safe**2], -1),
                torch.stack([zeros, fy / z_safe, -fy * ty / z_safe**2], -1),
            ],
            dim=-2,
        )  # [N, 2, 3]
        cov2d = jac @ cov_cam @ jac.transpose(1, 2)  # [N, 2, 2]
        det_orig = cov2d[:, 0, 0] * cov2d[:, 1, 1] - cov2d[:, 0, 1] * cov2d[:, 1, 0]
        cov2d = cov2d + eps2d * torch.eye(2, dtype=means.dtype)
        det = cov2d[:, 0, 0] * cov2d[:, 1, 1] - cov2d[:, 0, 1] * cov2d[:, 1, 0]
        conic = torch.linalg.inv(cov2d)  # [N, 2, 2]
        with torch.no_grad():
            half_trace = 0.5 * (cov2d[:, 0, 0] + cov2d[:, 1, 1])
            radius = torch.ceil(3 * torch.sqrt(half_trace + torch.sqrt((half_trace**2 - det).clamp(min=0.01))))
            visible = in_depth & (det > 0) & (u + radius > 0) & (u - radius < width)
            visible &= (v + radius > 0) & (v - radius < height)
            radius = torch.where(visible, radius, torch.zeros_like(radius))
        opacity = opacities
        if rasterize_mode == "antialiased":
            opacity = opacity * torch.sqrt((det_orig / det).clamp(min=0.0))
        if sh_degree is None:
            color = colors
        else:
            campos = -rot.T @ trans
            color = (_ref_sh_to_rgb(sh_degree, means - campos, colors) + 0.5).clamp(min=0.0)
        if render_mode == "RGB":
            feats, bg = color, backgrounds
        elif render_mode in ("D", "ED"):
            feats, bg = z[:, None], None if backgrounds is None else torch.zeros_like(backgrounds[:, :1])
        else:
            feats = torch.cat([color, z[:, None]], dim=-1)
            bg = None if backgrounds is None else torch.cat([backgrounds, torch.zeros_like(backgrounds[:, :1])], -1)

        transmittance = torch.ones_like(px)
        done = torch.zeros_like(px, dtype=torch.bool)
        image = torch.zeros(px.shape[0], feats.shape[-1], dtype=means.dtype)
        for g in sorted(torch.nonzero(visible).flatten().tolist(), key=lambda i: (z[i].item(), i)):
            r = radius[g].item() / tile_size
            tile_x0, tile_x1 = math.floor(u[g].item() / tile_size - r), math.ceil(u[g].item() / tile_size + r)
            tile_y0, tile_y1 = math.floor(v[g].item() / tile_size - r), math.ceil(v[g].item() / tile_size + r)
            in_tiles = (pixel_tile_x >= tile_x0) & (pixel_tile_x < tile_x1)
            in_tiles &= (pixel_tile_y >= tile_y0) & (pixel_tile_y < tile_y1)
            in_tiles |= not tile_culling
            dx, dy = u[g] - px, v[g] - py
            sigma = 0.5 * (conic[g, 0, 0] * dx * dx + conic[g, 1, 1] * dy * dy) + conic[g, 0, 1] * dx * dy
            alpha = torch.clamp(opacity[g] * torch.exp(-sigma), max=0.999)
            take = in_tiles & ~done & (sigma >= 0) & (alpha >= 1 / 255)
            next_t = transmittance * (1 - alpha)
            stop = take & (next_t <= 1e-4)
            done = done | stop
            take = take & ~stop
            image = image + torch.where(take, alpha * transmittance, torch.zeros_like(alpha))[:, None] * feats[g]
            transmittance = torch.where(take, next_t, transmittance)
        alphas = (1 - transmittance)[:, None]
        n_stopped += int(done.sum())
        if bg is not None:
            image = image + bg[cam] * transmittance[:, None]
        if render_mode in ("ED", "RGB+ED"):
            image = torch.cat([image[:, :-1], image[:, -1:] / alphas.clamp(min=1e-10)], dim=-1)
        out_colors.append(image.reshape(height, width, -1))
        out_alphas.append(alphas.reshape(height, width, 1))
        out_radii.append(radius.int())
        out_means2d.append(torch.stack([u, v], -1))
    return (
        torch.stack(out_colors),
        torch.stack(out_alphas),
        torch.stack(out_radii),
        torch.stack(out_means2d),
        n_stopped,
    )


# ----------------------------------------------------------------------------------------------------------------------
# Scenes
# ----------------------------------------------------------------------------------------------------------------------


def _look_at_viewmat(eye: list[float], target: list[float]) -> torch.Tensor:
    """World-to-camera [4, 4] (OpenCV: x right, y down, z forward) looking from `eye` at `target`."""
    eye_t, target_t = torch.tensor(eye, dtype=torch.float64), torch.tensor(target, dtype=torch.float64)
    forward = torch.nn.functional.normalize(target_t - eye_t, dim=0)
    right = torch.nn.functional.normalize(
        torch.linalg.cross(forward, torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)), dim=0
    )
    down = torch.linalg.cross(forward, right)
    rot = torch.stack([right, down, forward])  # rows: camera axes in world coordinates
    viewmat = torch.eye(4, dtype=torch.float64)
    viewmat[:3, :3], viewmat[:3, 3] = rot, -rot @ eye_t
    return viewmat


def make_scene(seed: int, sh_degree: int | None, n_gauss: int = N_GAUSS, dtype=torch.float64) -> dict:
    """A seeded scene: a dense cluster (opaque pixels, early stops) plus scattered Gaussians, some behind or outside
    the camera, seen by two cameras."""
    gen = torch.Generator().manual_seed(seed)
    n_cluster = n_gauss // 2
    means = torch.cat(
        [torch.randn(n_cluster, 3, generator=gen) * 0.3, (torch.rand(n_gauss - n_cluster, 3, generator=gen) - 0.5) * 6]
    )
    scales = torch.exp(torch.randn(n_gauss, 3, generator=gen) * 0.5 - 2.2)
    scales[:n_cluster] *= 1.5
    quats = torch.randn(n_gauss, 4, generator=gen)
    opacities = torch.rand(n_gauss, generator=gen) * 0.9 + 0.05
    opacities[:n_cluster] = opacities[:n_cluster] * 0.3 + 0.69  # [0.69, 0.99]: the cluster's core is opaque
    if sh_degree is None:
        colors = torch.rand(n_gauss, 3, generator=gen)
    else:
        colors = torch.randn(n_gauss, (sh_degree + 1) ** 2, 3, generator=gen) * 0.4
    eyes = ([0.3, -0.2, -3.0], [-2.5, 0.5, -2.0])
    viewmats = torch.stack([_look_at_viewmat(eye, [0.0, 0.0, 0.0]) for eye in eyes])
    Ks = torch.tensor([[32.0, 0, 20.0], [0, 32.0, 14.0], [0, 0, 1]], dtype=torch.float64).expand(2, 3, 3).clone()
    Ks[1, :2, :2] *= 0.8
    backgrounds = torch.rand(2, 3, generator=gen)
    scene = dict(means=means, quats=quats, scales=scales, opacities=opacities, colors=colors)
    scene = {k: v.to(dtype).requires_grad_() for k, v in scene.items()}
    scene.update(viewmats=viewmats.to(dtype), Ks=Ks.to(dtype), backgrounds=backgrounds.to(dtype))
    return scene


def _render_both(scene, *, sh_degree, render_mode, with_background, rasterize_mode, packed=False, **ref_kwargs):
    backgrounds = scene["backgrounds"] if with_background else None
    args = [scene[k] for k in ("means", "quats", "scales", "opacities", "colors", "viewmats", "Ks")]
    ours = rasterization_torch(
        *args, WIDTH, HEIGHT, sh_degree=sh_degree, packed=packed, backgrounds=backgrounds,
        render_mode=render_mode, rasterize_mode=rasterize_mode,
    )  # fmt: skip
    ref = reference_rasterization(
        *args, WIDTH, HEIGHT, sh_degree=sh_degree, render_mode=render_mode, backgrounds=backgrounds,
        rasterize_mode=rasterize_mode, **ref_kwargs,
    )  # fmt: skip
    return ours, ref


@pytest.fixture(autouse=True)
def _one_thread():
    """These tensors are tiny: one intra-op thread is as fast, and many times faster when other processes share the
    cores (OpenMP threads then wait on each other at every op)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def small_chunks(monkeypatch):
    """Force many tile groups (activation checkpointing) and short depth slices (early exit)."""
    monkeypatch.setitem(cpu_rasterizer.CHUNK_ELEMENTS, "cpu", 2 * 256 * 40)
    monkeypatch.setattr(cpu_rasterizer, "DEPTH_SLICE_FIRST", 4)
    monkeypatch.setattr(cpu_rasterizer, "DEPTH_SLICE", 8)


# ----------------------------------------------------------------------------------------------------------------------
# Rasterizer against the reference
# ----------------------------------------------------------------------------------------------------------------------


def test_scene_exercises_culling_and_early_stop():
    """The test scene has invisible Gaussians and pixels that stop early, so the comparisons below cover those rules."""
    scene = make_scene(0, None)
    kwargs = dict(sh_degree=None, render_mode="RGB", with_background=False, rasterize_mode="classic")
    (_, _, meta), (_, _, ref_radii, _, n_stopped) = _render_both(scene, **kwargs)
    assert 0 < int((ref_radii == 0).sum()) < ref_radii.numel() // 2, ref_radii
    assert n_stopped > 50, n_stopped
    torch.testing.assert_close(meta["radii"], ref_radii, rtol=0, atol=0)


def test_tile_culling_matches_gsplat():
    """A Gaussian reaches past its 3-sigma tile range with alpha >= 1/255 at a few pixels; gsplat (and we) skip them."""
    dtype = torch.float64
    depth, u = 2.0, 17.0  # its radius ends right at a tile boundary
    scene = dict(
        means=torch.tensor([[(u - 20.0) * depth / 32.0, 0.0, depth]], dtype=dtype),
        quats=torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=dtype),
        scales=torch.full((1, 3), 0.3, dtype=dtype),
        opacities=torch.tensor([0.99], dtype=dtype),
        colors=torch.ones(1, 3, dtype=dtype),
        viewmats=torch.eye(4, dtype=dtype)[None],
        Ks=torch.tensor([[[32.0, 0.0, 20.0], [0.0, 32.0, 14.0], [0.0, 0.0, 1.0]]], dtype=dtype),
    )
    kwargs = dict(sh_degree=None, render_mode="RGB", backgrounds=None, rasterize_mode="classic")
    args = [scene[k] for k in ("means", "quats", "scales", "opacities", "colors", "viewmats", "Ks")]
    culled = reference_rasterization(*args, WIDTH, HEIGHT, **kwargs)[0]
    unculled = reference_rasterization(*args, WIDTH, HEIGHT, **kwargs, tile_culling=False)[0]
    assert float((culled - unculled).abs().max()) > 1e-3
    colors, _, _ = rasterization_torch(*args, WIDTH, HEIGHT, packed=False)
    torch.testing.assert_close(colors, culled, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("with_background", [False, True])
@pytest.mark.parametrize("rasterize_mode", ["classic", "antialiased"])
@pytest.mark.parametrize("sh_degree", [None, 1, 3])
@pytest.mark.parametrize("render_mode", RENDER_MODES)
def test_forward_matches_reference(render_mode, sh_degree, rasterize_mode, with_background):
    scene = make_scene(1, sh_degree)
    (colors, alphas, meta), (ref_colors, ref_alphas, ref_radii, ref_means2d, _) = _render_both(
        scene, sh_degree=sh_degree, render_mode=render_mode, with_background=with_background,
        rasterize_mode=rasterize_mode,
    )  # fmt: skip
    channels = {"RGB": 3, "D": 1, "ED": 1, "RGB+D": 4, "RGB+ED": 4}[render_mode]
    assert colors.shape == (2, HEIGHT, WIDTH, channels) and alphas.shape == (2, HEIGHT, WIDTH, 1)
    # float64 on both sides with the same discrete decisions: differences are rounding only.
    torch.testing.assert_close(alphas, ref_alphas, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(colors, ref_colors, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(meta["radii"], ref_radii, rtol=0, atol=0)
    visible = ref_radii > 0
    torch.testing.assert_close(meta["means2d"][visible], ref_means2d[visible], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("seed", [2, 3])
def test_forward_float32_close_to_float64_reference(seed):
    """float32 (what splatfacto uses) against the float64 reference: rounding may flip a threshold at a few pixels."""
    scene64 = make_scene(seed, 3)
    scene32 = make_scene(seed, 3, dtype=torch.float32)
    kwargs = dict(sh_degree=3, render_mode="RGB+ED", with_background=True, rasterize_mode="antialiased")
    (colors, alphas, _), _ = _render_both(scene32, **kwargs)
    _, (ref_colors, ref_alphas, *_) = _render_both(scene64, **kwargs)
    rgb_err = (colors[..., :3].double() - ref_colors[..., :3]).detach().abs()
    alpha_err = (alphas.double() - ref_alphas).detach().abs()
    assert float(rgb_err.mean()) < 1e-4 and float(alpha_err.mean()) < 1e-4, (rgb_err.mean(), alpha_err.mean())
    assert float(rgb_err.max()) < 2e-2 and float(alpha_err.max()) < 2e-2, (rgb_err.max(), alpha_err.max())


@pytest.mark.parametrize("chunking", ["default", "small"])
@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("rasterize_mode", ["classic", "antialiased"])
@pytest.mark.parametrize("sh_degree", [None, 1, 3])
@pytest.mark.parametrize("render_mode", ["RGB", "RGB+ED", "D"])
def test_backward_matches_reference(render_mode, sh_degree, rasterize_mode, packed, chunking, request):
    if chunking == "small":
        request.getfixturevalue("small_chunks")
    scene = make_scene(4, sh_degree)
    (colors, alphas, _), (ref_colors, ref_alphas, *_) = _render_both(
        scene, sh_degree=sh_degree, render_mode=render_mode, with_background=True, rasterize_mode=rasterize_mode,
        packed=packed,
    )  # fmt: skip
    gen = torch.Generator().manual_seed(5)
    weights = torch.rand(colors.shape, generator=gen, dtype=torch.float64)
    alpha_weights = torch.rand(alphas.shape, generator=gen, dtype=torch.float64)
    names = ["means", "quats", "scales", "opacities"] + ([] if render_mode == "D" else ["colors"])
    inputs = [scene[name] for name in names]
    grads = torch.autograd.grad((colors * weights).sum() + (alphas * alpha_weights).sum(), inputs)
    ref_grads = torch.autograd.grad((ref_colors * weights).sum() + (ref_alphas * alpha_weights).sum(), inputs)
    for name, grad, ref_grad in zip(names, grads, ref_grads):
        assert float(ref_grad.abs().max()) > 0, name
        torch.testing.assert_close(grad, ref_grad, rtol=1e-7, atol=1e-8, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("chunking", ["default", "small"])
def test_chunking_does_not_change_the_render(chunking, request):
    if chunking == "small":
        request.getfixturevalue("small_chunks")
    scene = make_scene(6, 3)
    (colors, alphas, _), (ref_colors, ref_alphas, *_) = _render_both(
        scene, sh_degree=3, render_mode="RGB+D", with_background=True, rasterize_mode="classic"
    )
    torch.testing.assert_close(colors, ref_colors, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(alphas, ref_alphas, rtol=1e-9, atol=1e-9)


# ----------------------------------------------------------------------------------------------------------------------
# meta, absgrad, packed, errors
# ----------------------------------------------------------------------------------------------------------------------


def _render(scene, **kwargs):
    args = [scene[k] for k in ("means", "quats", "scales", "opacities", "colors", "viewmats", "Ks")]
    return rasterization_torch(*args, WIDTH, HEIGHT, **kwargs)


def test_meta_keys_and_shapes_unpacked():
    scene = make_scene(7, 3, dtype=torch.float32)
    _, _, meta = _render(scene, sh_degree=3, packed=False)
    n_cams = scene["viewmats"].shape[0]
    for key in ("camera_ids", "gaussian_ids", "isect_ids", "flatten_ids", "isect_offsets"):
        assert key in meta and meta[key] is None, key
    assert meta["radii"].shape == (n_cams, N_GAUSS) and meta["radii"].dtype == torch.int32
    assert meta["means2d"].shape == (n_cams, N_GAUSS, 2) and meta["means2d"].requires_grad
    assert meta["depths"].shape == (n_cams, N_GAUSS)
    assert meta["conics"].shape == (n_cams, N_GAUSS, 3)
    assert meta["opacities"].shape == (n_cams, N_GAUSS)
    assert meta["tiles_per_gauss"].shape == (n_cams, N_GAUSS)
    assert (meta["tiles_per_gauss"][meta["radii"] == 0] == 0).all()
    assert (meta["width"], meta["height"], meta["n_cameras"], meta["tile_size"]) == (WIDTH, HEIGHT, n_cams, 16)
    assert (meta["tile_width"], meta["tile_height"]) == (3, 2)
    invisible = meta["radii"] == 0
    assert invisible.any() and (meta["means2d"][invisible] == 0).all() and (meta["depths"][invisible] == 0).all()


def test_packed_matches_unpacked():
    scene = make_scene(8, 1, dtype=torch.float32)
    colors, alphas, meta = _render(scene, sh_degree=1, packed=False, render_mode="RGB+D")
    colors_p, alphas_p, meta_p = _render(scene, sh_degree=1, packed=True, render_mode="RGB+D")
    torch.testing.assert_close(colors_p, colors, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(alphas_p, alphas, rtol=1e-6, atol=1e-6)
    visible = meta["radii"] > 0
    nnz = int(visible.sum())
    camera_ids, gaussian_ids = torch.nonzero(visible, as_tuple=True)
    torch.testing.assert_close(meta_p["camera_ids"], camera_ids, rtol=0, atol=0)
    torch.testing.assert_close(meta_p["gaussian_ids"], gaussian_ids, rtol=0, atol=0)
    assert meta_p["radii"].shape == (nnz,) and meta_p["means2d"].shape == (nnz, 2)
    assert meta_p["conics"].shape == (nnz, 3) and meta_p["opacities"].shape == (nnz,)
    torch.testing.assert_close(meta_p["means2d"], meta["means2d"][visible], rtol=0, atol=0)


@pytest.mark.parametrize("packed", [False, True])
def test_absgrad_is_set_after_backward(packed):
    scene = make_scene(9, 3, dtype=torch.float32)
    colors, _, meta = _render(scene, sh_degree=3, packed=packed, absgrad=True)
    meta["means2d"].retain_grad()  # as gsplat's DefaultStrategy.step_pre_backward
    assert not hasattr(meta["means2d"], "absgrad")
    (colors * torch.linspace(-1, 1, colors.numel()).reshape(colors.shape)).sum().backward()
    grad, absgrad = meta["means2d"].grad, meta["means2d"].absgrad
    assert absgrad.shape == meta["means2d"].shape
    torch.testing.assert_close(absgrad, grad.abs(), rtol=0, atol=0)
    assert float(absgrad.max()) > 0
    for name in ("means", "quats", "scales", "opacities", "colors"):
        assert scene[name].grad is not None and torch.isfinite(scene[name].grad).all(), name


def test_gaussians_at_the_camera_give_finite_gradients():
    """Gaussians at or behind the camera plane are culled without NaN leaking into the gradients."""
    scene = make_scene(10, None, dtype=torch.float32)
    eye = -scene["viewmats"][0, :3, :3].T @ scene["viewmats"][0, :3, 3]
    with torch.no_grad():
        scene["means"][:3] = eye  # depth exactly 0 for camera 0
    colors, alphas, meta = _render(scene, packed=False, rasterize_mode="antialiased", render_mode="RGB+ED")
    (colors.sum() + alphas.sum()).backward()
    assert (meta["radii"][0, :3] == 0).all()
    for name in ("means", "quats", "scales", "opacities", "colors"):
        assert torch.isfinite(scene[name].grad).all(), name


def test_per_camera_colors_and_covars_inputs():
    """colors [C, N, D] render each camera with its own colors; covars [N, 3, 3] replace quats and scales."""
    scene = make_scene(13, None)
    per_camera = torch.stack([scene["colors"], scene["colors"].flip(0)])  # [C, N, 3]
    colors, alphas, _ = _render({**scene, "colors": per_camera}, packed=False)
    for cam in range(2):
        single = {**scene, "colors": per_camera[cam], "viewmats": scene["viewmats"][cam : cam + 1]}
        single["Ks"] = scene["Ks"][cam : cam + 1]
        colors_c, alphas_c, _ = _render(single, packed=False)
        torch.testing.assert_close(colors[cam : cam + 1], colors_c, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(alphas[cam : cam + 1], alphas_c, rtol=1e-12, atol=1e-12)
    covars = _ref_covariances(scene["quats"], scene["scales"])
    args = [scene["means"], None, None, scene["opacities"], scene["colors"], scene["viewmats"], scene["Ks"]]
    colors_cov, alphas_cov, _ = rasterization_torch(*args, WIDTH, HEIGHT, packed=False, covars=covars)
    colors_qs, alphas_qs, _ = _render(scene, packed=False)
    torch.testing.assert_close(colors_cov, colors_qs, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(alphas_cov, alphas_qs, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("camera_model", ["ortho", "fisheye"])
def test_other_camera_models_run(camera_model):
    scene = make_scene(14, 1, dtype=torch.float32)
    if camera_model == "ortho":
        scene["Ks"] = scene["Ks"].clone()
        scene["Ks"][:, :2, :2] *= 5.0  # pixels per world unit
    colors, alphas, meta = _render(scene, sh_degree=1, packed=False, camera_model=camera_model)
    (colors.sum() + alphas.sum()).backward()
    assert float(alphas.detach().max()) > 0.5 and (meta["radii"] > 0).any()
    for name in ("means", "quats", "scales", "opacities", "colors"):
        assert torch.isfinite(scene[name].grad).all(), name


def test_empty_view_renders_background_and_backpropagates():
    """With every Gaussian behind the camera the render is the background and backward() gives zero gradients."""
    scene = make_scene(15, None, dtype=torch.float32)
    with torch.no_grad():
        scene["means"][:, :] = -(scene["viewmats"][0, :3, :3].T @ scene["viewmats"][0, :3, 3]) * 2  # behind camera 0
    single = {**scene, "viewmats": scene["viewmats"][:1], "Ks": scene["Ks"][:1]}
    colors, alphas, meta = _render(single, packed=False, backgrounds=scene["backgrounds"][:1], absgrad=True)
    assert (meta["radii"] == 0).all()
    torch.testing.assert_close(colors, scene["backgrounds"][:1, None, None, :].expand_as(colors))
    assert (alphas == 0).all()
    colors.sum().backward()
    assert (scene["means"].grad == 0).all() and (meta["means2d"].absgrad == 0).all()


def test_unsupported_options_raise():
    scene = make_scene(11, None, dtype=torch.float32)
    with pytest.raises(NotImplementedError, match="distributed"):
        _render(scene, distributed=True, packed=False)
    with pytest.raises(NotImplementedError, match="sparse_grad"):
        _render(scene, sparse_grad=True, packed=True)


def test_render_is_deterministic():
    scene = make_scene(12, 3, dtype=torch.float32)
    first = _render(scene, sh_degree=3, packed=False)
    second = _render(scene, sh_degree=3, packed=False)
    torch.testing.assert_close(first[0], second[0], rtol=0, atol=0)
    torch.testing.assert_close(first[1], second[1], rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------------------------------
# splatfacto on CPU through the fallback
# ----------------------------------------------------------------------------------------------------------------------


def _cpu_splatfacto(seed: int, num_points: int, **config):
    from nerfstudio.cameras.cameras import Cameras, CameraType
    from nerfstudio.data.scene_box import SceneBox
    from nerfstudio.models.splatfacto import SplatfactoModelConfig

    torch.manual_seed(seed)
    points = torch.randn(num_points, 3) * 0.4
    point_colors = torch.rand(num_points, 3) * 255
    model = SplatfactoModelConfig(**config).setup(
        scene_box=SceneBox(aabb=torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])),
        num_train_data=1,
        seed_points=(points, point_colors),
    )
    # nerfstudio cameras look down -z: this one sits at z = 3 and looks at the origin.
    camera = Cameras(
        camera_to_worlds=torch.tensor([[[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 3.0]]]),
        fx=60.0,
        fy=60.0,
        cx=32.0,
        cy=32.0,
        width=64,
        height=64,
        camera_type=CameraType.PERSPECTIVE,
    )
    optimizers = {name: torch.optim.Adam([param], lr=1e-3) for name, param in model.gauss_params.items()}
    return model, camera, optimizers


def _train_step(model, camera, optimizers, step: int) -> dict:
    """One step as nerfstudio's trainer runs it: callbacks, render, loss, backward, optimizer step, refinement."""
    model.step_cb(types.SimpleNamespace(optimizers=optimizers), step)
    outputs = model.get_outputs(camera)
    batch = {"image": torch.full((*outputs["rgb"].shape[:2], 3), 0.5)}
    loss = sum(model.get_loss_dict(outputs, batch).values())
    loss.backward()
    for optimizer in optimizers.values():
        optimizer.step()
    model.step_post_backward(step)
    for optimizer in optimizers.values():
        optimizer.zero_grad()
    return outputs


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU path; CUDA is available")
def test_splatfacto_renders_and_backprops_on_cpu(random_lpips_backbones):
    import nerfstudio.models.splatfacto as splatfacto
    from gsplat.rendering import rasterization

    from igs2gs.cpu_fallback import install_cpu_fallback

    install_cpu_fallback()
    install_cpu_fallback()  # idempotent
    assert splatfacto.rasterization.cuda_rasterization is rasterization  # the original stays reachable
    with pytest.raises(RuntimeError):  # only splatfacto's own .cuda() calls are let through
        torch.zeros(1).cuda()
    model, camera, optimizers = _cpu_splatfacto(0, 500, num_downscales=0)
    assert model.means.device.type == "cpu" and model.features_dc.device.type == "cpu"
    model.train()
    model.step_cb(types.SimpleNamespace(optimizers=optimizers), 1)
    outputs = model.get_outputs(camera)
    assert outputs["rgb"].shape == (64, 64, 3)
    assert float(outputs["accumulation"].detach().max()) > 0.5
    outputs["rgb"].mean().backward()
    for name, param in model.gauss_params.items():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
    assert float(model.means.grad.abs().max()) > 0
    assert model.info["means2d"].absgrad.shape == (1, 500, 2)  # splatfacto uses absgrad by default

    model.eval()
    outputs = model.get_outputs_for_camera(camera)
    assert outputs["rgb"].shape == (64, 64, 3) and outputs["depth"].shape == (64, 64, 1)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU path; CUDA is available")
def test_default_strategy_refinement_runs_on_cpu(random_lpips_backbones):
    from igs2gs.cpu_fallback import install_cpu_fallback

    install_cpu_fallback()
    # Refine at every step from step 2 (pause_refine_after_reset = num_train_data + refine_every = 2), reset opacities
    # at step 4; a tiny gradient threshold makes every visible Gaussian grow, small ones duplicate, large ones split.
    model, camera, optimizers = _cpu_splatfacto(
        1, 400, num_downscales=0, warmup_length=0, refine_every=1, reset_alpha_every=4,
        densify_grad_thresh=1e-12, densify_size_thresh=0.05, cull_alpha_thresh=0.02,
    )  # fmt: skip
    model.train()
    _train_step(model, camera, optimizers, 1)
    assert model.num_points == 400
    _train_step(model, camera, optimizers, 2)  # grow + prune
    grown = model.num_points
    assert grown > 400, grown
    for name, param in model.gauss_params.items():
        assert param.shape[0] == grown, name
        state = optimizers[name].state[optimizers[name].param_groups[0]["params"][0]]
        assert optimizers[name].param_groups[0]["params"][0] is param, name
        assert state["exp_avg"].shape == param.shape, name
    assert model.strategy_state["grad2d"].shape == (grown,)
    _train_step(model, camera, optimizers, 3)
    _train_step(model, camera, optimizers, 4)  # refine, then reset opacities to 2 * cull_alpha_thresh
    assert float(torch.sigmoid(model.opacities.detach()).max()) <= 0.04 + 1e-6
    outputs = _train_step(model, camera, optimizers, 5)
    assert torch.isfinite(outputs["rgb"]).all()
