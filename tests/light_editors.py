"""Stand-in editors for edit-process tests that must not import nerfstudio (tests/test_edit_process.py does)."""

from __future__ import annotations

import sys


class LightInvertEditor:
    """Inverts the originals; built only in a child that imported neither the parent's main script nor nerfstudio's
    pipeline, and that received the editor's options rather than the pipeline config."""

    def edit(self, renders, originals, settings, generator=None):  # noqa: ANN001, ANN201
        return 1.0 - originals


def light_child_editor(config, device):  # noqa: ANN001, ANN201
    heavy = [m for m in ("nerfstudio.pipelines.base_pipeline", "igs2gs.igs2gs_pipeline") if m in sys.modules]
    main_script = getattr(sys.modules.get("__mp_main__"), "__file__", None)  # the parent's script, run again
    if main_script:
        heavy.append(main_script)
    if heavy or type(config).__name__ != "EditorOptions":
        raise RuntimeError(f"the child imported {heavy} and got a {type(config).__name__}")
    return LightInvertEditor()
