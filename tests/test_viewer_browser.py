"""The igs2gs controls in nerfstudio's real viewer, seen by a headless Chromium while `ns-train igs2gs` runs on CPU.

Skips without Chromium (Debian: `apt-get install chromium`); CI does not install it. Set
IGS2GS_VIEWER_SCREENSHOT=imgs/viewer_controls.png to refresh the README's screenshot.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import NS_BIN
from tests.tiny_ip2p import save_tiny_ip2p

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="needs a headless Chromium on PATH (Debian: apt-get install chromium)"
)
CONTROL_LABELS = ("Custom Elements", "igs2gs", "Prompt", "Text guidance", "Image guidance", "Edit all views now")
WINDOW = (1400, 1000)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, process: subprocess.Popen, log: Path, timeout_s: float = 600) -> None:
    """Poll `url` until it answers; fail with the training log if the process ends or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"ns-train exited with {process.returncode} before the viewer answered:\n{log.read_text()[-4000:]}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(1)
    pytest.fail(f"the viewer at {url} did not answer within {timeout_s} s:\n{log.read_text()[-4000:]}")


@pytest.fixture(scope="module")
def viewer(splatfacto_run):
    """`ns-train igs2gs --vis viewer` on the tiny scene, long enough to stay up; stopped after the tests.

    Yields the viewer's URL and the training log."""
    root = splatfacto_run["root"]
    port, log = free_port(), root / "viewer-train.log"
    command = [
        str(NS_BIN / "ns-train"), "igs2gs", "--data", str(splatfacto_run["scene"]),
        "--output-dir", str(root / "viewer"),
        "--load-dir", str(splatfacto_run["run"] / "nerfstudio_models"), "--max-num-iterations", "100000",
        "--machine.device-type", "cpu", "--vis", "viewer", "--viewer.websocket-port", str(port),
        "--viewer.quit-on-train-completion", "True", "--pipeline.ip2p-model", str(save_tiny_ip2p(root / "viewer-ip2p")),
        "--pipeline.gs-steps", "200", "--pipeline.prompt", "turn it into a panda",
    ]  # fmt: skip
    with open(log, "w") as out:
        process = subprocess.Popen(command, env=splatfacto_run["env"], cwd=root, stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f"http://localhost:{port}"
        wait_for_http(url, process, log)
        yield {"url": url, "log": log}
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """Headless Chromium with a fresh profile, no background traffic, 20 s of page time."""
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", f"--window-size={WINDOW[0]},{WINDOW[1]}", "--virtual-time-budget=20000",
    ]  # fmt: skip
    result = subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, f"chromium failed:\n{result.stderr[-3000:]}"
    return result


def test_the_viewer_page_shows_the_igs2gs_controls(viewer, tmp_path):
    dom = chromium(tmp_path, "--dump-dom", viewer["url"]).stdout
    missing = [label for label in CONTROL_LABELS if label not in dom]
    assert not missing, f"the viewer page lacks {missing}"
    assert "turn it into a panda" in dom  # the prompt field holds the run's prompt


def test_the_status_follows_the_rounds_and_a_screenshot(viewer, tmp_path):
    deadline = time.monotonic() + 600
    while "igs2gs: round 1 done" not in viewer["log"].read_text():
        assert time.monotonic() < deadline, f"no round finished:\n{viewer['log'].read_text()[-4000:]}"
        time.sleep(1)
    dom = chromium(tmp_path, "--dump-dom", viewer["url"]).stdout
    assert re.search(r'value="round \d+ of \d+(: \d+/10 views| done)"', dom), "no round status"
    screenshot = tmp_path / "viewer.png"
    chromium(tmp_path, f"--screenshot={screenshot}", viewer["url"])
    image = Image.open(screenshot)
    assert image.size == WINDOW
    if os.environ.get("IGS2GS_VIEWER_SCREENSHOT"):
        shutil.copy(screenshot, os.environ["IGS2GS_VIEWER_SCREENSHOT"])
