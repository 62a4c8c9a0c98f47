"""`GraphedCalls` off CUDA, and how the pipeline config turns the editor's CUDA graphs on (CPU side).

The capture and replay themselves need a GPU: tests/test_gpu.py checks them against eager calls.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

from igs2gs.cuda_graph_calls import GraphedCalls, signature
from igs2gs.fast_edits import configure_editor
from igs2gs.igs2gs_pipeline import IGS2GSPipelineConfig


def test_calls_on_the_cpu_run_the_function_eagerly() -> None:
    calls = []

    def fn(x: torch.Tensor, scale: float) -> torch.Tensor:
        calls.append(scale)
        return x * scale

    graphed = GraphedCalls(fn)
    x = torch.arange(4.0)
    torch.testing.assert_close(graphed(x, 2.0), x * 2)
    torch.testing.assert_close(graphed(x, 3.0), x * 3)
    assert calls == [2.0, 3.0] and graphed.num_graphs == 0


def test_a_signature_tells_layouts_and_values_apart() -> None:
    x = torch.zeros(2, 3)
    assert signature((x, 1.0)) == signature((torch.ones(2, 3), 1.0))  # values of tensors do not matter
    assert signature((x, 1.0)) != signature((x, 0.0))
    assert signature((x,)) != signature((torch.zeros(3, 2),))
    assert signature((x,)) != signature((x.t().contiguous().t(),))  # same shape, other strides
    assert signature((x,)) != signature((x.half(),))


class RecordingEditor:
    """Records which speed switches configure_editor turns on."""

    def __init__(self, device: str) -> None:
        self.device = torch.device(device)
        self.calls: list[str] = []
        self.pad_views_to = 0

    def __getattr__(self, name: str):
        if name.startswith(("enable_", "disable_")):
            return lambda *args, **kwargs: self.calls.append(name)
        raise AttributeError(name)


def _config(**changes) -> SimpleNamespace:
    defaults = {k: getattr(IGS2GSPipelineConfig(), k) for k in IGS2GSPipelineConfig.__dataclass_fields__}
    return SimpleNamespace(**{**defaults, **changes})


def test_cuda_editors_replay_captured_graphs_by_default() -> None:
    editor = RecordingEditor("cuda")
    configure_editor(editor, _config())
    assert editor.calls == ["enable_vae_slicing", "enable_fast_kernels", "enable_cuda_graphs"]
    assert editor.pad_views_to == IGS2GSPipelineConfig().edit_batch_size  # one captured batch size per round


def test_compile_replaces_the_captured_graphs_and_the_cpu_gets_neither() -> None:
    editor = RecordingEditor("cuda")
    configure_editor(editor, _config(ip2p_compile=True))
    assert "enable_compile" in editor.calls and "enable_cuda_graphs" not in editor.calls
    editor = RecordingEditor("cuda")
    configure_editor(editor, _config(ip2p_cuda_graphs=False))
    assert "enable_cuda_graphs" not in editor.calls and editor.pad_views_to == 0
    editor = RecordingEditor("cpu")
    configure_editor(editor, _config())
    assert editor.calls == ["enable_vae_slicing"] and editor.pad_views_to == 0
