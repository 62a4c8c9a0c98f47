"""Regional compilation of InstructPix2Pix (`ip2p_speed.CompiledRegions`), traced on the CPU with dynamo's eager
backend: which blocks compile, that they compute what the eager blocks do, and the run-only switch.
The editor only compiles on CUDA; tests/test_gpu.py runs it there."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch._dynamo.utils import counters

from igs2gs.fast_edits import configure_editor
from igs2gs.ip2p_speed import REGION_CLASSES, CompiledRegions
from igs2gs.validation import IGS2GSConfigError, check_pipeline_options
from tests.tiny_ip2p import tiny_components


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _unet_call(unet: torch.nn.Module, side: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(side)
    sample = torch.randn(2, unet.config.in_channels, side, side, generator=g)
    text = torch.randn(2, 4, unet.config.cross_attention_dim, generator=g)
    with torch.no_grad():
        return unet(sample, torch.tensor([10, 500]), text).sample


def test_each_outermost_block_compiles_and_computes_what_it_did(fresh_dynamo):
    unet = tiny_components(seed=0)["unet"].eval()
    expected = _unet_call(unet, 8)
    regions = CompiledRegions([unet], backend="eager")
    names = {type(module).__name__ for module in regions.modules}
    assert {"ResnetBlock2D", "Transformer2DModel"} <= names <= set(REGION_CLASSES)
    for outer in regions.modules:
        inner = [module for module in outer.modules() if module is not outer]
        assert not any(module is other for module in inner for other in regions.modules), "nested block compiled"
    graphs = counters["stats"]["unique_graphs"]
    torch.testing.assert_close(_unet_call(unet, 8), expected)
    assert counters["stats"]["unique_graphs"] > graphs, "the blocks were traced"
    assert regions.compiling


def test_after_stop_compiling_a_new_shape_runs_eagerly(fresh_dynamo):
    unet = tiny_components(seed=0)["unet"].eval()
    expected = _unet_call(unet, 16)
    regions = CompiledRegions([unet], backend="eager")
    _unet_call(unet, 8)  # the warm-up's shape
    regions.stop_compiling()
    graphs = counters["stats"]["unique_graphs"]
    torch.testing.assert_close(_unet_call(unet, 16), expected)
    assert counters["stats"]["unique_graphs"] == graphs, "no block compiled after stop_compiling"
    assert not regions.compiling
    regions.undo()
    assert all(module._compiled_call_impl is None for module in regions.modules)


def test_regions_go_with_compile_and_without_cuda_graphs():
    from igs2gs.igs2gs_pipeline import IGS2GSPipelineConfig

    config = IGS2GSPipelineConfig(ip2p_compile=True, ip2p_compile_regions=True, ip2p_cuda_graphs=True)
    with pytest.raises(IGS2GSConfigError, match="leave --pipeline.ip2p-cuda-graphs off"):
        check_pipeline_options(config)
    config = IGS2GSPipelineConfig(ip2p_compile=False, ip2p_compile_regions=True)
    with pytest.raises(IGS2GSConfigError, match="pass --pipeline.ip2p-compile True with it"):
        check_pipeline_options(config)
    check_pipeline_options(IGS2GSPipelineConfig(ip2p_compile=True, ip2p_compile_regions=True))


class CompileRecordingEditor:
    device = torch.device("cuda")

    def __init__(self) -> None:
        self.calls: list = []
        self.pad_views_to = 0

    def enable_vae_slicing(self) -> None:
        pass

    def enable_fast_kernels(self, **kwargs) -> None:
        pass

    def enable_compile(self, **kwargs) -> None:
        self.calls.append(kwargs)


def test_the_option_reaches_the_editor():
    options = SimpleNamespace(
        ip2p_memory_savers=False, edit_batch_size=8, ip2p_fast_kernels=True, ip2p_compile=True,
        ip2p_cuda_graphs=False, ip2p_compile_cache=None, ip2p_compile_regions=True,
    )  # fmt: skip
    editor = CompileRecordingEditor()
    configure_editor(editor, options)
    assert editor.calls == [{"cuda_graphs": False, "cache_dir": None, "regions": True}]


def test_the_edit_process_compiles_regions_itself(monkeypatch):
    import igs2gs.igs2gs_pipeline as pipeline_module
    from igs2gs.igs2gs_pipeline import IGS2GSPipeline, IGS2GSPipelineConfig

    started = []
    monkeypatch.setattr(pipeline_module, "EditProcess", lambda *args, **kwargs: started.append(kwargs))
    for regions in (False, True):
        config = IGS2GSPipelineConfig(ip2p_compile=True, ip2p_compile_regions=regions)
        IGS2GSPipeline._start_edit_process(config, "cuda:1")
    assert [kwargs["compile_ahead"] for kwargs in started] == [True, False], "no compiling child for regions"
