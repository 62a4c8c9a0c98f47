"""Random-weight torchvision backbones where torch hub looks for the ImageNet ones.

LPIPS (splatfacto's metric and our loss) builds torchvision's AlexNet with pretrained weights, which
cannot be downloaded here. Tests point TORCH_HOME at a temporary folder holding random weights of the
same architecture: the plumbing runs, the LPIPS values are meaningless.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision

BACKBONES = {"alexnet-owt-7be5be79.pth": torchvision.models.alexnet}


def write_random_lpips_backbones(torch_home: Path) -> Path:
    """Write the backbone checkpoints into `torch_home/hub/checkpoints`; return `torch_home`."""
    checkpoints = Path(torch_home) / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    for filename, build in BACKBONES.items():
        if not (checkpoints / filename).exists():
            torch.manual_seed(0)
            torch.save(build().state_dict(), checkpoints / filename)
    return Path(torch_home)
