"""Nothing igs2gs loads can run code: model weights come from safetensors, configs are read as plain data."""

from __future__ import annotations

from pathlib import Path
from typing import List

import pytest
import torch

from igs2gs.checkpoint_checks import run_method_name
from tests.tiny_ip2p import save_tiny_ip2p


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_ip2p(tmp_path_factory.mktemp("tiny-ip2p"), seed=0)


def test_the_ip2p_folder_holds_safetensors_only(tiny_folder):
    suffixes = {".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".pkl"}
    weights = sorted(p.relative_to(tiny_folder).as_posix() for p in tiny_folder.rglob("*") if p.suffix in suffixes)
    assert weights and all(name.endswith(".safetensors") for name in weights), weights


def test_ip2p_loads_without_unpickling_or_remote_code(tiny_folder, monkeypatch):
    import diffusers
    import transformers

    from igs2gs.ip2p import load_ip2p_editor

    def no_pickles(*args, **kwargs):
        raise AssertionError(f"torch.load called on {args[:1]}: model files must load as safetensors")

    monkeypatch.setattr(torch, "load", no_pickles)
    remote_code: List[object] = []
    for owner in (
        diffusers.UNet2DConditionModel,
        diffusers.AutoencoderKL,
        transformers.CLIPTextModel,
        transformers.CLIPTokenizer,
    ):
        original = owner.from_pretrained.__func__

        def spy(cls, *args, _original=original, **kwargs):
            remote_code.append(kwargs.get("trust_remote_code", False))
            return _original(cls, *args, **kwargs)

        monkeypatch.setattr(owner, "from_pretrained", classmethod(spy))
    editor = load_ip2p_editor(str(tiny_folder), device="cpu", full_precision=True)
    assert editor.unet is not None
    assert remote_code == [False] * 4


def test_a_run_config_is_read_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    (tmp_path / "config.yml").write_text(
        "!!python/object:nerfstudio.engine.trainer.TrainerConfig\n"
        "method_name: nerfacto\n"
        f"data: !!python/object/apply:os.system ['touch {marker}']\n"
        "output_dir: !!python/object/apply:pathlib.PosixPath ['outputs']\n"
    )
    assert run_method_name(tmp_path) == "nerfacto"
    assert not marker.exists()
