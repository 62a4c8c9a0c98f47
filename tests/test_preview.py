"""`igs2gs-preview` through its console script, on a generated scene with the tiny random InstructPix2Pix."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from igs2gs.labelled_grid import LINE_HEIGHT, GridLayout, default_font, wrap_text
from igs2gs.preview import pick_views
from tests.conftest import run_ns
from tests.scene_factory import make_scene
from tests.tiny_ip2p import save_tiny_ip2p

NOTE = "random-weight model: noise, not an edit"


@pytest.fixture(scope="module")
def preview(tmp_path_factory):
    root = tmp_path_factory.mktemp("preview")
    scene = make_scene(root / "scene", num_views=11, size=64)
    ip2p = save_tiny_ip2p(root / "ip2p")
    output = root / "out" / "grid.png"
    prompt = 'make it "red", please'
    run_ns(
        "igs2gs-preview", "--data", str(scene), "--prompt", prompt, "--num-views", "2",
        "--guidance-scales", "5", "12.5", "--image-guidance-scales", "1.5", "--ip2p-model", str(ip2p),
        "--device", "cpu", "--diffusion-steps", "2", "--cell-size", "64", "--note", NOTE, "--output", str(output),
        env={**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}, cwd=root,
    )  # fmt: skip
    title = f"prompt: {prompt!r}   model: {ip2p}   seed 0\n{NOTE}"
    return {"scene": scene, "output": output, "title": title}


def expected_layout(title: str) -> GridLayout:
    """2 views x (original + 2 guidance pairs) at 64 px, two header lines ("text 5" / "image 1.5")."""
    probe = GridLayout(rows=2, cols=3, cell=64, title_lines=0)
    lines = wrap_text(title, probe.size[0] - 2 * probe.pad, default_font())
    return GridLayout(rows=2, cols=3, cell=64, title_lines=len(lines), header_lines=2)


def test_the_grid_has_one_row_per_view_and_one_column_per_setting(preview):
    grid = Image.open(preview["output"])
    layout = expected_layout(preview["title"])
    assert grid.mode == "RGB" and grid.size == layout.size
    assert layout.title_lines >= 2  # the prompt line and the note


def test_labels_are_drawn_and_the_first_column_is_the_photo(preview):
    grid = np.asarray(Image.open(preview["output"]), dtype=int)
    layout = expected_layout(preview["title"])
    ink = lambda region: int((region.max(axis=-1) < 128).sum())  # noqa: E731 (dark pixels of text)
    title_band = grid[layout.pad : layout.pad + layout.title_lines * LINE_HEIGHT]
    header_band = grid[layout.top - 2 * LINE_HEIGHT : layout.top]
    x0, y0 = layout.cell_origin(0, 0)
    row_label = grid[y0 : y0 + 64, : layout.row_label_width]
    assert ink(title_band) > 50 and ink(header_band) > 50 and ink(row_label) > 20
    for col in range(3):  # a label over every column
        x, _ = layout.cell_origin(0, col)
        assert ink(header_band[:, x : x + 64]) > 10, f"no label over column {col}"
    photo = np.asarray(Image.open(preview["scene"] / "images" / "frame_00000.png"), dtype=int)[..., :3]
    assert np.abs(grid[y0 : y0 + 64, x0 : x0 + 64] - photo).mean() < 2  # view 0 is the first training photo
    for col in (1, 2):
        x, y = layout.cell_origin(0, col)
        assert np.abs(grid[y : y + 64, x : x + 64] - photo).mean() > 5, "an edit equals the photo"


def test_pick_views_spreads_over_the_split_and_checks_explicit_views():
    assert pick_views(10, 3, None) == [0, 3, 6]
    assert pick_views(2, 5, None) == [0, 1]
    assert pick_views(10, 3, (4, 9)) == [4, 9]
    with pytest.raises(ValueError, match="not in the train split"):
        pick_views(10, 3, (10,))
