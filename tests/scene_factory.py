"""Generate tiny scenes in nerfstudio's format (transforms.json, images/, sparse_pc.ply) for tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image


def _look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """OpenGL-style camera-to-world (camera looks down -z, y up), as nerfstudio's transforms.json stores it."""
    forward = target - eye
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, np.array([0.0, 0.0, 1.0]))
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, up, -forward, eye
    return c2w


def _scene_points(num_points: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Points on a unit sphere (the object) coloured by their position, uint8 RGB."""
    xyz = rng.normal(size=(num_points, 3))
    xyz /= np.linalg.norm(xyz, axis=1, keepdims=True)
    rgb = np.clip((xyz * 0.5 + 0.5) * 255, 0, 255).astype(np.uint8)
    return xyz, rgb


def _render_points(xyz, rgb, c2w, focal, size) -> np.ndarray:
    """Z-buffered 3x3 px splats of the points: a consistent image of the object from `c2w`."""
    w2c = np.linalg.inv(c2w)
    cam = xyz @ w2c[:3, :3].T + w2c[:3, 3]
    depth = -cam[:, 2]
    u = focal * cam[:, 0] / depth + size / 2
    v = -focal * cam[:, 1] / depth + size / 2
    image = np.full((size, size, 3), 40, dtype=np.uint8)
    zbuf = np.full((size, size), np.inf)
    for i in np.argsort(depth):
        if depth[i] <= 0:
            continue
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                x, y = int(u[i]) + dx, int(v[i]) + dy
                if 0 <= x < size and 0 <= y < size and depth[i] < zbuf[y, x]:
                    zbuf[y, x] = depth[i]
                    image[y, x] = rgb[i]
    return image


def make_scene(folder: Path, num_views: int = 10, size: int = 64, num_points: int = 1500, seed: int = 0) -> Path:
    """Write a scene of `num_views` views at `size` px around a coloured sphere; return `folder`."""
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    xyz, rgb = _scene_points(num_points, rng)
    focal = size * 1.2
    frames = []
    for i in range(num_views):
        angle = 2 * np.pi * i / num_views
        eye = np.array([3.5 * np.cos(angle), 3.5 * np.sin(angle), 1.0])
        c2w = _look_at(eye, np.zeros(3))
        name = f"images/frame_{i:05d}.png"
        Image.fromarray(_render_points(xyz, rgb, c2w, focal, size)).save(folder / name)
        frames.append({"file_path": name, "transform_matrix": c2w.tolist()})
    transforms = {
        "camera_model": "OPENCV",
        "fl_x": focal,
        "fl_y": focal,
        "cx": size / 2,
        "cy": size / 2,
        "w": size,
        "h": size,
        "k1": 0.0,
        "k2": 0.0,
        "p1": 0.0,
        "p2": 0.0,
        "frames": frames,
        "ply_file_path": "sparse_pc.ply",
    }
    (folder / "transforms.json").write_text(json.dumps(transforms, indent=2))
    _write_ply(folder / "sparse_pc.ply", xyz + rng.normal(scale=0.02, size=xyz.shape), rgb)
    return folder


def _write_ply(path: Path, xyz: np.ndarray, rgb: np.ndarray) -> None:
    """An ASCII PLY point cloud with colours, as COLMAP's export that ns-process-data writes."""
    header = (
        "ply\nformat ascii 1.0\n"
        f"element vertex {len(xyz)}\n"
        "property float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n"
    )
    rows = "\n".join(f"{x:.6f} {y:.6f} {z:.6f} {r} {g} {b}" for (x, y, z), (r, g, b) in zip(xyz, rgb))
    path.write_text(header + rows + "\n")
