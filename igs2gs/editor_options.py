"""The pipeline config's InstructPix2Pix options, as a small dataclass that an edit process receives.

The edit process (edit_process.py) is spawned, so what it is given is unpickled there: an
`IGS2GSPipelineConfig` would import nerfstudio's pipeline, model, datamanager and viewer modules in the child
before it starts loading InstructPix2Pix (2.4 s of a 3.4 s child start on a 2-core CPU, measured with a
stand-in editor). These are the fields the child reads.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Optional


@dataclass
class EditorOptions:
    """The fields of `IGS2GSPipelineConfig` that build, configure and run the editor (documented there)."""

    ip2p_model: str
    ip2p_use_full_precision: bool
    ip2p_memory_savers: bool
    ip2p_fast_kernels: bool
    ip2p_compile: bool
    ip2p_cuda_graphs: bool
    ip2p_compile_cache: Optional[Path]
    ip2p_compile_saved: bool
    edit_batch_size: int
    edit_max_side: int


def editor_options(config: Any) -> EditorOptions:
    """The editor's options, read from a pipeline config (`IGS2GSPipelineConfig`)."""
    return EditorOptions(**{option.name: getattr(config, option.name) for option in fields(EditorOptions)})
