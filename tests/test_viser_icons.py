"""viser's icons are read through one index of its archive (igs2gs/viser_icons.py)."""

from __future__ import annotations

import tarfile
from typing import Callable

import pytest
import viser._gui_api
import viser._gui_handles
import viser._icons

from igs2gs import viser_icons
from tests.test_pipeline import make_trainer

ICONS = ("folder", "player-play", "camera", "device-floppy", "video")


@pytest.fixture
def viser_as_shipped(monkeypatch) -> Callable[[str], str]:
    """viser's own `svg_from_icon` (also after another test's trainer changed it), put back in each module that
    holds it for this test; returns it."""
    current = viser._icons.svg_from_icon
    original = getattr(current, "__wrapped__", current)
    for module in (viser._icons, viser._gui_api, viser._gui_handles):
        monkeypatch.setattr(module, "svg_from_icon", original)
    return original


def test_icons_read_through_the_index_are_viser_own_and_the_archive_is_scanned_once(viser_as_shipped, monkeypatch):
    original = viser_as_shipped
    expected = {name: original(name) for name in ICONS}
    viser_icons._index.cache_clear()
    scans = []
    real_getmembers = tarfile.TarFile.getmembers
    monkeypatch.setattr(tarfile.TarFile, "getmembers", lambda tar: scans.append(tar.name) or real_getmembers(tar))

    viser_icons.read_viser_icons_once()

    assert viser._gui_api.svg_from_icon is viser._gui_handles.svg_from_icon is viser._icons.svg_from_icon
    assert viser._gui_api.svg_from_icon is not original
    read = {name: viser._gui_api.svg_from_icon(name) for name in ICONS * 2}
    assert read == expected and all(text.lstrip().startswith("<svg") for text in read.values())
    assert len(scans) == 1  # viser's own function scans the archive once per icon


def test_a_pipeline_makes_the_change_once_before_nerfstudio_builds_a_viewer(
    splatfacto_run, tmp_path, random_lpips_backbones, viser_as_shipped
):
    original = viser_as_shipped
    make_trainer(splatfacto_run, tmp_path)  # nerfstudio builds the pipeline before any viewer (also in ns-viewer)
    changed = viser._gui_api.svg_from_icon
    assert changed is not original and changed.__wrapped__ is original  # type: ignore[attr-defined]
    viser_icons.read_viser_icons_once()
    assert viser._gui_api.svg_from_icon is changed
