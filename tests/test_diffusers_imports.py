"""InstructPix2Pix loads without importing peft (diffusers_imports.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.tiny_ip2p import save_tiny_ip2p

REPO = Path(__file__).resolve().parents[1]

LOAD = """
import sys
from igs2gs.ip2p import load_ip2p_editor
load_ip2p_editor(sys.argv[1], device="cpu", full_precision=True)
print("peft imported" if "peft" in sys.modules else "no peft")
"""

PLAIN = """
import diffusers
diffusers.UNet2DConditionModel
"""


def fake_peft(folder: Path) -> Path:
    """An installed peft (as pip leaves it) whose import fails loudly."""
    (folder / "peft").mkdir(parents=True)
    (folder / "peft" / "__init__.py").write_text('raise RuntimeError("peft was imported")\n')
    (folder / "peft-99.0.0.dist-info").mkdir()
    (folder / "peft-99.0.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: peft\nVersion: 99.0.0\n")
    return folder


def run(code: str, *args: str, site: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join((str(site), str(REPO))), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=600)


def test_the_editor_loads_without_importing_an_installed_peft(tmp_path):
    site = fake_peft(tmp_path / "site")
    assert "peft was imported" in run(PLAIN, site=site).stderr  # diffusers alone imports an installed peft
    loaded = run(LOAD, str(save_tiny_ip2p(tmp_path / "ip2p")), site=site)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert loaded.stdout.split()[-2:] == ["no", "peft"]
