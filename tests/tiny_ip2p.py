"""A tiny random InstructPix2Pix, built locally without network (helpers for the tests, not tests).

Each component is seeded before it is built, so the same call gives the same weights. Shapes:
- VAE: 4 blocks (8, 16, 16, 16 channels) -> downscale factor 8 like SD 1.5, 4 latent channels,
  scaling_factor 0.18215; images need sides that are multiples of 8 (64 x 64 px -> 8 x 8 latents).
- UNet: 8 input channels (latents + image condition), 4 output, blocks (8, 16), cross-attention 16.
- CLIP text encoder: hidden size 16, 2 layers, 77 positions, over a byte-level BPE tokenizer
  written to a temporary folder (the 256 byte characters, their `</w>` forms, a few merges and
  the two special tokens), so English prompts tokenize like CLIP's, only into more pieces.
- Scheduler: SD 1.5's PNDMScheduler config (1000 steps, scaled_linear 0.00085..0.012,
  steps_offset 1); the loader turns it into a DDIMScheduler as it does for the real checkpoint.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Union

import torch

from igs2gs.ip2p import InstructPix2PixEditor, save_ip2p_folder

TINY_VAE_SCALE_FACTOR = 8
TINY_TEXT_DIM = 16

# SD 1.5's scheduler config (scheduler/scheduler_config.json of the InstructPix2Pix checkpoint).
SD15_SCHEDULER_CONFIG: dict[str, Any] = {
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
    "clip_sample": False,
}

_MERGES = [("t", "h"), ("th", "e</w>"), ("i", "n"), ("a", "n"), ("e", "r"), ("o", "n</w>"), ("a", "r</w>")]


def _byte_characters() -> list[str]:
    """The 256 printable characters that CLIP's byte-level BPE uses for the 256 byte values."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes = dict(zip(printable, printable))
    extra = 0
    for byte in range(256):
        if byte not in codes:
            codes[byte] = 256 + extra
            extra += 1
    return [chr(codes[byte]) for byte in sorted(codes)]


def tiny_tokenizer() -> Any:
    """A CLIPTokenizer over a minimal vocabulary, written to and read from a temporary folder."""
    from transformers import CLIPTokenizer

    chars = _byte_characters()
    vocab = [*chars, *(c + "</w>" for c in chars), *("".join(m) for m in _MERGES)]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(vocab)}))
        (Path(folder) / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in _MERGES))
        return CLIPTokenizer.from_pretrained(folder, model_max_length=77)


def tiny_components(seed: int = 0) -> dict[str, Any]:
    """unet, vae, text_encoder, tokenizer and a PNDM `scheduler` (as in the real checkpoint), seeded."""
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=8,
        out_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TINY_TEXT_DIM,
        attention_head_dim=4,
    )
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=64,
        scaling_factor=0.18215,
    )
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=TINY_TEXT_DIM,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=77,
            projection_dim=TINY_TEXT_DIM,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    ).eval()
    scheduler = PNDMScheduler.from_config(SD15_SCHEDULER_CONFIG)
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer, "scheduler": scheduler}


def tiny_editor(seed: int = 0, device: Union[str, torch.device] = "cpu") -> InstructPix2PixEditor:
    """An in-memory float32 editor over the tiny components (scheduler converted to DDIM)."""
    from diffusers import DDIMScheduler

    parts = tiny_components(seed)
    parts["scheduler"] = DDIMScheduler.from_config(parts["scheduler"].config)
    return InstructPix2PixEditor(**parts, device=device, dtype=torch.float32)


def save_tiny_ip2p(folder: Union[str, Path], seed: int = 0) -> Path:
    """Write the tiny model as a complete local diffusers InstructPix2Pix folder (safetensors)."""
    return save_ip2p_folder(folder, **tiny_components(seed))
