"""nerfstudio's viewer builds its panels without reading viser's icon archive once per icon (viser 0.2.7).

viser keeps its ~4,300 GUI icons in one uncompressed tar. For every button or tab with an icon, `svg_from_icon`
opens the archive and looks the icon up by name, which makes tarfile read every member's header first: about 80 ms
per icon on a 2-core CPU, and 1.8 s of py-spy samples of nerfstudio's `Viewer.__init__` (20-odd icons) in a bear run
on the lent GPU machine, before the first training step. Here the archive's index is read once per process and each
icon is read straight from its member: the same text, one scan.
"""

from __future__ import annotations

import functools
import tarfile
from pathlib import Path
from typing import Dict


@functools.lru_cache(maxsize=None)
def _index(archive: Path) -> Dict[str, tarfile.TarInfo]:
    """Each member of the tar `archive` by name."""
    with tarfile.open(archive) as tar:
        return {member.name: member for member in tar.getmembers()}


def read_icon(archive: Path, icon_name: str) -> str:
    """The SVG text of `icon_name` in viser's icon `archive` (what viser's `svg_from_icon` returns)."""
    member = _index(archive)[f"{icon_name}.svg"]
    with tarfile.open(archive) as tar:
        icon_file = tar.extractfile(member)
        assert icon_file is not None, f"{member.name} is not a file in {archive}"
        return icon_file.read().decode("utf-8")


def read_viser_icons_once() -> None:
    """Make viser's `svg_from_icon` read its archive's index once per process; nothing to do without viser's
    icon module or once done."""
    try:
        import viser._gui_api
        import viser._gui_handles
        import viser._icons as icons
    except ImportError:  # pragma: no cover - another viser layout: leave it as it is
        return
    original = getattr(icons, "svg_from_icon", None)
    archive = Path(icons.ICONS_DIR) / "tabler-icons.tar" if hasattr(icons, "ICONS_DIR") else None
    if original is None or getattr(original, "_igs2gs_indexed", False) or archive is None or not archive.is_file():
        return

    def svg_from_icon(icon_name: str) -> str:
        return read_icon(archive, icon_name)

    svg_from_icon._igs2gs_indexed = True  # type: ignore[attr-defined]
    svg_from_icon.__wrapped__ = original  # type: ignore[attr-defined]  # viser's own, as functools.wraps keeps it
    for module in (icons, viser._gui_api, viser._gui_handles):  # the GUI modules import it by name
        if getattr(module, "svg_from_icon", None) is original:
            module.svg_from_icon = svg_from_icon  # type: ignore[attr-defined]
