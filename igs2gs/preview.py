"""`igs2gs-preview`: try a prompt in 2D on a few training photos before a 3D edit, as one labelled PNG grid.

Each grid row is a training view: its original photo, then its edit at every pair of text and image
guidance scales. The edit is the one training makes (`ImageEditor.edit` of the same editor, at the
pipeline's `edit_resolution`, seeded with `edit_seed`), with the photo as both the render and the
image condition (in 2D the render is the photo). All cells of a row share one seed, so they differ
only by their guidance. Views are numbered as training numbers them (nerfstudio's train split).

    igs2gs-preview --data data/bear --prompt "turn the bear into a panda" \\
        --guidance-scales 5 7.5 12.5 --image-guidance-scales 1.2 1.5 --output preview.png
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch
import tyro
from nerfstudio.utils.rich_utils import CONSOLE

from igs2gs.edit_sizes import edit_resolution, resize
from igs2gs.editor import EditSettings, ImageEditor
from igs2gs.igs2gs_pipeline import edit_seed
from igs2gs.labelled_grid import labelled_grid


@dataclass
class PreviewConfig:
    """Edit a few training photos in 2D with a grid of guidance scales and save one labelled PNG."""

    data: Path
    """Scene folder in nerfstudio's format (transforms.json and images), as passed to ns-train --data."""
    prompt: str
    """The edit instruction, e.g. "turn the bear into a panda" (quote it in the shell)."""
    num_views: int = 3
    """Number of training views, spread evenly over the train split (ignored when --views is given)."""
    views: Optional[Tuple[int, ...]] = None
    """Explicit training view indices (0-based, the train split's order), e.g. --views 0 12 40."""
    guidance_scales: Tuple[float, ...] = (7.5, 12.5)
    """Text guidance values, one grid column each (with every image guidance value); training's default is 12.5."""
    image_guidance_scales: Tuple[float, ...] = (1.5,)
    """Image guidance values (training's default is 1.5)."""
    ip2p_model: str = "timbrooks/instruct-pix2pix"
    """InstructPix2Pix weights: a Hugging Face hub id or a local diffusers folder (as --pipeline.ip2p-model)."""
    device: Optional[str] = None
    """Device of InstructPix2Pix, e.g. "cuda:1"; None: "cuda" when available, else "cpu" (slow)."""
    full_precision: bool = False
    """float32 instead of float16 on CUDA (always float32 on the CPU)."""
    diffusion_steps: int = 20
    """DDIM steps per edit (as --pipeline.diffusion-steps)."""
    lower_bound: float = 0.70
    """Lower bound of the noise level T, a fraction of the 1,000 timesteps (as --pipeline.lower-bound)."""
    upper_bound: float = 0.98
    """Upper bound of the noise level T (as --pipeline.upper-bound)."""
    edit_max_side: int = 512
    """Edit at most this many pixels on the longer side (as --pipeline.edit-max-side); 0: full size."""
    seed: int = 0
    """Seed of the edits; a view's cells share it, so they differ only by guidance."""
    cell_size: int = 256
    """Side of a grid cell in pixels (images are scaled to fit)."""
    note: str = ""
    """An extra line under the prompt, e.g. which model made the picture."""
    output: Path = Path("igs2gs_preview.png")
    """Where the PNG grid is written."""


def pick_views(num_train: int, count: int, views: Optional[Tuple[int, ...]]) -> List[int]:
    """The training view indices to preview: `views` checked against the split, or `count` spread evenly."""
    if views:
        bad = [v for v in views if not 0 <= v < num_train]
        if bad:
            raise ValueError(f"--views {list(views)}: {bad} not in the train split's 0..{num_train - 1}")
        return list(views)
    if count < 1:
        raise ValueError(f"--num-views must be >= 1, got {count}")
    count = min(count, num_train)
    return sorted({i * num_train // count for i in range(count)})


def load_train_photos(data: Path, views: Optional[Tuple[int, ...]], count: int) -> List[Tuple[int, torch.Tensor]]:
    """(index, [H, W, 3] float32 photo in [0, 1]) of the chosen training views, read by nerfstudio's dataparser."""
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
    from nerfstudio.data.datasets.base_dataset import InputDataset

    if not (data / "transforms.json").exists() and not data.name.endswith(".json"):
        raise FileNotFoundError(f"--data {data}: no transforms.json there; pass the folder given to ns-train --data")
    outputs = NerfstudioDataParserConfig(data=data, load_3D_points=False).setup().get_dataparser_outputs("train")
    dataset = InputDataset(outputs)
    chosen = pick_views(len(dataset), count, views)
    return [(idx, dataset.get_image_float32(idx)[..., :3]) for idx in chosen]


def edit_photo(
    editor: ImageEditor, photo: torch.Tensor, settings: EditSettings, seed: int, max_side: int
) -> torch.Tensor:
    """Edit one [H, W, 3] photo as training edits a render (here the render is the photo); same size out."""
    size = tuple(photo.shape[:2])
    image = resize(photo.permute(2, 0, 1)[None].float(), edit_resolution(*size, max_side=max_side))
    generator = torch.Generator("cpu").manual_seed(seed)
    edited = editor.edit(image, image, settings, generator=generator)
    return resize(edited.float().cpu(), size).clamp(0, 1)[0].permute(1, 2, 0)


def to_uint8(image: torch.Tensor) -> np.ndarray:
    return (image.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def guidance_pairs(config: PreviewConfig) -> List[Tuple[float, float]]:
    """Every (text, image) guidance pair, text guidance varying slowest; all must be > 0."""
    pairs = [(t, i) for t in config.guidance_scales for i in config.image_guidance_scales]
    if not pairs or any(t <= 0 or i <= 0 for t, i in pairs):
        raise ValueError(
            f"--guidance-scales {config.guidance_scales} and --image-guidance-scales {config.image_guidance_scales} "
            "must each hold at least one value, all > 0"
        )
    return pairs


def run_preview(config: PreviewConfig, editor: Optional[ImageEditor] = None) -> Path:
    """Edit the chosen views at every guidance pair and write the grid to `config.output`; return its path."""
    pairs = guidance_pairs(config)
    photos = load_train_photos(config.data, config.views, config.num_views)
    if editor is None:
        from igs2gs.ip2p import load_ip2p_editor

        device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
        CONSOLE.log(f"igs2gs-preview: loading InstructPix2Pix ({config.ip2p_model}) on {device}")
        full = config.full_precision or torch.device(device).type != "cuda"
        editor = load_ip2p_editor(config.ip2p_model, device=device, full_precision=full)
    rows = []
    for idx, photo in photos:
        row = [to_uint8(photo)]
        for text, image in pairs:
            settings = EditSettings(
                prompt=config.prompt,
                guidance_scale=text,
                image_guidance_scale=image,
                diffusion_steps=config.diffusion_steps,
                lower_bound=config.lower_bound,
                upper_bound=config.upper_bound,
            )
            edited = edit_photo(editor, photo, settings, edit_seed(config.seed, idx), config.edit_max_side)
            row.append(to_uint8(edited))
        rows.append(row)
        CONSOLE.log(f"igs2gs-preview: view {idx} edited at {len(pairs)} guidance settings")
    title = f"prompt: {config.prompt!r}   model: {config.ip2p_model}   seed {config.seed}"
    grid = labelled_grid(
        rows,
        column_labels=["original", *(f"text {t:g}\nimage {i:g}" for t, i in pairs)],
        row_labels=[f"view {idx}" for idx, _ in photos],
        title=f"{title}\n{config.note}" if config.note else title,
        cell=config.cell_size,
    )
    config.output.parent.mkdir(parents=True, exist_ok=True)
    grid.save(config.output)
    CONSOLE.log(f"igs2gs-preview: wrote {config.output} ({grid.width} x {grid.height} px)")
    return config.output


def entrypoint() -> None:
    """Console script `igs2gs-preview`."""
    run_preview(tyro.cli(PreviewConfig))


if __name__ == "__main__":
    entrypoint()
