"""The README's options table against the config: every igs2gs option listed and real, with its default."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, Dict

from nerfstudio.engine.trainer import TrainerConfig

from igs2gs.igs2gs import IGS2GSModelConfig
from igs2gs.igs2gs_config import igs2gs_method
from igs2gs.igs2gs_datamanager import IGS2GSDataManagerConfig
from igs2gs.igs2gs_pipeline import IGS2GSPipelineConfig

README = Path(__file__).resolve().parents[1] / "README.md"
NESTED = {"_target", "datamanager", "model", "dataparser"}


def own_fields(cls: type, prefix: str, instance: Any) -> Dict[str, Any]:
    """`--prefix.field-name` -> default, for the fields `cls` itself declares (not inherited, not nested)."""
    return {
        f"--{prefix}{name.replace('_', '-')}": getattr(instance, name)
        for name in vars(cls).get("__annotations__", {})
        if name not in NESTED
    }


def documented_options() -> Dict[str, Any]:
    """The options the table must hold: igs2gs's own fields, and trainer defaults igs2gs changes."""
    config = igs2gs_method.config
    options = {
        **own_fields(IGS2GSPipelineConfig, "pipeline.", config.pipeline),
        **own_fields(IGS2GSModelConfig, "pipeline.model.", config.pipeline.model),
        **own_fields(IGS2GSDataManagerConfig, "pipeline.datamanager.", config.pipeline.datamanager),
    }
    nerfstudio = TrainerConfig()
    for field in dataclasses.fields(TrainerConfig):
        value = getattr(config, field.name)
        if field.name != "method_name" and isinstance(value, (bool, int, float, str)):
            if value != getattr(nerfstudio, field.name):
                options[f"--{field.name.replace('_', '-')}"] = value
    return options


def readme_table() -> Dict[str, str]:
    """option -> default cell of the "## Options" table."""
    section = README.read_text().split("\n## Options\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        match = re.match(r"\| `(--[a-z0-9.-]+)` \| `([^`]*)` \|", line)
        if match:
            rows[match[1]] = match[2]
        else:
            assert not line.startswith("| `--"), f"a table row must hold one option and a `default`: {line}"
    return rows


def as_cell(value: Any) -> str:
    """A default as the table writes it: strings in double quotes, the rest as Python prints it."""
    if isinstance(value, (str, Path)) and not isinstance(value, bool):
        return f'"{value}"'
    return str(value)


def test_the_options_table_lists_every_igs2gs_option_with_its_default():
    table, options = readme_table(), documented_options()
    missing = sorted(set(options) - set(table))
    unknown = sorted(set(table) - set(options))
    assert not missing, f"README options table lacks {missing}"
    assert not unknown, f"README options table lists options igs2gs does not own or change: {unknown}"
    wrong = {name: (table[name], as_cell(value)) for name, value in options.items() if table[name] != as_cell(value)}
    assert not wrong, f"README defaults (written, actual): {wrong}"
