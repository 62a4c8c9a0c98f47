"""Take a slow check out of every `ns-*` command's start (nerfstudio 1.1.5).

nerfstudio lists the methods it can install (`get_external_methods`) when `method_configs` is imported, on every
`ns-train`, `ns-viewer`, `ns-render` and `ns-export`. Each of those 26 entries is a dataclass whose `__post_init__`
asks whether `get_external_methods` is the caller two frames up, and finds out with `inspect.stack()`: a full
traceback with source lines of every frame of the import, each looked up against every loaded module. With torch
loaded that took 2.5 s of a 7.0 s `method_configs` import on a 2-core CPU (0.1 ms with this change).

The same question is answered here from the frame itself (`sys._getframe(2)`, the frame `inspect.stack()[2]`
describes); anything else still goes to nerfstudio's own `__post_init__`, which offers to install the method. The
plugin's entry point is imported while nerfstudio discovers its plugins, before it lists those methods, so the
change is in place in time.
"""

from __future__ import annotations

import sys
from typing import Any

_CALLER = "get_external_methods"


def skip_external_method_stacks() -> None:
    """Answer `ExternalMethodDummyTrainerConfig.__post_init__`'s caller check without `inspect.stack()`."""
    try:
        from nerfstudio.configs.external_methods import ExternalMethodDummyTrainerConfig
    except ImportError:  # pragma: no cover - another nerfstudio layout: leave it as it is
        return
    original = ExternalMethodDummyTrainerConfig.__post_init__
    if getattr(original, "_igs2gs_fast", False):
        return

    def __post_init__(self: Any) -> None:
        # Frame 0 is this function, 1 the dataclass's __init__, 2 its caller: inspect.stack()[2] in nerfstudio's.
        if sys._getframe(2).f_code.co_name == _CALLER:
            return
        original(self)

    __post_init__._igs2gs_fast = True  # type: ignore[attr-defined]
    ExternalMethodDummyTrainerConfig.__post_init__ = __post_init__  # type: ignore[method-assign]
