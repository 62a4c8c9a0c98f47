"""Build the real InstructPix2Pix architecture with random weights and save it as a local folder.

For speed and memory benchmarks without hub access: the same UNet (8 input channels, ~860 M
parameters), VAE, CLIP text encoder, tokenizer and scheduler config as `timbrooks/instruct-pix2pix`,
read from an architecture folder of configs (unet/config.json, vae/config.json,
text_encoder/config.json, tokenizer/ files, scheduler/scheduler_config.json). The edits are noise;
the cost per edit is the real one.

    python benchmarks/make_random_ip2p.py OUT_DIR [--arch DIR] [--seed 0] [--dtype float16] [--device cpu]

The folder loads with `load_ip2p_editor(OUT_DIR)` or `--pipeline.ip2p-model OUT_DIR`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Union

import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ARCH = REPO.parent / "shared" / "models" / "ip2p-sd15-arch"


def build_arch_components(
    arch_dir: Union[str, Path] = DEFAULT_ARCH,
    seed: int = 0,
    device: Union[str, torch.device] = "cpu",
) -> dict[str, Any]:
    """unet, vae, text_encoder (random, float32, seeded before each), tokenizer and the checkpoint's
    own scheduler (a PNDMScheduler for SD 1.5), built from the configs in `arch_dir` on `device`
    (pass torch.device("meta") to check the configs without allocating weights)."""
    from diffusers import AutoencoderKL, SchedulerMixin, UNet2DConditionModel
    from diffusers import schedulers as diffusers_schedulers
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    arch = Path(arch_dir)
    missing = [s for s in ("unet", "vae", "text_encoder", "tokenizer", "scheduler") if not (arch / s).is_dir()]
    if missing:
        raise FileNotFoundError(
            f"arch_dir {str(arch)!r} lacks {', '.join(m + '/' for m in missing)}; pass the folder of "
            "InstructPix2Pix configs with --arch DIR (e.g. shared/models/ip2p-sd15-arch)"
        )
    scheduler_config = json.loads((arch / "scheduler" / "scheduler_config.json").read_text())
    scheduler_cls = getattr(diffusers_schedulers, scheduler_config["_class_name"])
    assert issubclass(scheduler_cls, SchedulerMixin), scheduler_cls
    with torch.device(device):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(arch / "unet"))
        torch.manual_seed(seed)
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(arch / "vae"))
        torch.manual_seed(seed)
        text_encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(arch / "text_encoder"))
    return {
        "unet": unet,
        "vae": vae,
        "text_encoder": text_encoder.eval(),
        "tokenizer": CLIPTokenizer.from_pretrained(arch / "tokenizer"),
        "scheduler": scheduler_cls.from_config(scheduler_config),
    }


def build_arch_ip2p(
    folder_out: Union[str, Path],
    arch_dir: Union[str, Path] = DEFAULT_ARCH,
    seed: int = 0,
    dtype: torch.dtype = torch.float16,
    device: Union[str, torch.device] = "cpu",
) -> Path:
    """Write the random real-architecture InstructPix2Pix to `folder_out` (weights saved in `dtype`:
    float16 halves the folder to ~2.1 GB; the loader casts to its own dtype). Building on a CUDA
    `device` initialises the ~1 B parameters faster than the CPU."""
    from igs2gs.ip2p import save_ip2p_folder

    parts = build_arch_components(arch_dir, seed=seed, device=device)
    for name in ("unet", "vae", "text_encoder"):
        parts[name] = torch.nn.Module.to(parts[name], dtype)  # same cast as .to(dtype), without diffusers' warning
    return save_ip2p_folder(folder_out, **parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, help="folder to write (created)")
    parser.add_argument("--arch", type=Path, default=DEFAULT_ARCH, help=f"folder of configs (default {DEFAULT_ARCH})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument("--dtype", choices=("float16", "float32"), default="float16", help="dtype of saved weights")
    parser.add_argument("--device", default="cpu", help="device to initialise the weights on (cuda is faster)")
    args = parser.parse_args()
    if str(REPO) not in sys.path:  # run as a script from a checkout without `pip install -e .`
        sys.path.insert(0, str(REPO))
    out = build_arch_ip2p(args.out_dir, args.arch, seed=args.seed, dtype=getattr(torch, args.dtype), device=args.device)
    print(f"wrote a random-weight InstructPix2Pix ({args.dtype}) to {out}")


if __name__ == "__main__":
    main()
