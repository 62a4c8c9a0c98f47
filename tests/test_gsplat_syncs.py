"""gsplat's rendering module inverts view matrices without a synchronisation (igs2gs/gsplat_syncs.py)."""

from __future__ import annotations

import gsplat.rendering as rendering
import torch

import igs2gs.igs2gs_config  # noqa: F401 (the plugin installs it, as ns-train imports it)
from igs2gs.gsplat_syncs import TorchWithUncheckedInverse, invert_without_sync


def _viewmats(n: int = 3) -> torch.Tensor:
    torch.manual_seed(0)
    rotations, _ = torch.linalg.qr(torch.randn(n, 3, 3))
    viewmats = torch.eye(4).repeat(n, 1, 1)
    viewmats[:, :3, :3], viewmats[:, :3, 3] = rotations, torch.randn(n, 3)
    return viewmats


def test_the_plugin_gives_gsplat_the_unchecked_inverse_once():
    view = rendering.torch
    assert isinstance(view, TorchWithUncheckedInverse)
    invert_without_sync()
    assert rendering.torch is view, "installing again changes nothing"


def test_it_inverts_as_torch_does_and_passes_everything_else_through(monkeypatch):
    view = TorchWithUncheckedInverse()
    viewmats = _viewmats()
    checked = []
    monkeypatch.setattr(torch.linalg, "inv", lambda *a, **k: checked.append(1))  # the checking path is not taken
    torch.testing.assert_close(view.inverse(viewmats), torch.linalg.inv_ex(viewmats).inverse, rtol=0, atol=0)
    monkeypatch.undo()
    torch.testing.assert_close(view.inverse(viewmats), torch.inverse(viewmats), rtol=0, atol=0)
    assert not checked
    assert view.zeros is torch.zeros and view.Tensor is torch.Tensor and view.float32 is torch.float32
    out = torch.empty(3, 4, 4)
    view.inverse(viewmats, out=out)
    torch.testing.assert_close(out, torch.inverse(viewmats))
