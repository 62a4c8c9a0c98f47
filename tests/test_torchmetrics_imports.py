"""splatfacto's metrics are imported without transformers (igs2gs/torchmetrics_imports.py), in fresh interpreters:
the test process has imported torchmetrics long before."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROBE = """
import json, sys
from igs2gs.torchmetrics_imports import torchmetrics_without_transformers
context = torchmetrics_without_transformers() if sys.argv[1] == "without" else __import__("contextlib").nullcontext()
with context:
    from torchmetrics.image import PeakSignalNoiseRatio
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity
imported_with_metrics = "transformers" in sys.modules
import torch
psnr = float(PeakSignalNoiseRatio(data_range=1.0)(torch.zeros(1, 3, 8, 8), torch.full((1, 3, 8, 8), 0.1)))
from transformers import CLIPTextModel  # the editor's own import still works
from torchmetrics.utilities import imports
print(json.dumps({"transformers": imported_with_metrics, "psnr": psnr, "clip": CLIPTextModel.__name__,
                  "finders": sum(type(f).__name__ == "_FlagsFinder" for f in sys.meta_path),
                  "flag": bool(imports._TRANSFORMERS_GREATER_EQUAL_4_4)}))
"""


def probe(mode: str) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("mode", ["without", "plain"])
def test_metrics_import_transformers_only_without_the_context(mode):
    result = probe(mode)
    assert result["transformers"] is (mode == "plain")
    assert result["flag"] is (mode == "plain")
    assert result["psnr"] == pytest.approx(20.0, abs=1e-3)
    assert result["clip"] == "CLIPTextModel" and result["finders"] == 0
