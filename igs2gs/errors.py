"""Errors meant for the user: `ns-train` prints their message and exits with status 1, without a traceback.

They subclass `SystemExit`, whose argument Python prints to stderr when nothing catches it; nerfstudio's
`ns-train` lets it pass (it catches only `KeyboardInterrupt`). Code that runs igs2gs in-process catches
them like any other exception.
"""

from __future__ import annotations


class IGS2GSError(SystemExit):
    """A failure the user can fix; the message names the option or file and the fix."""

    def __init__(self, message: str) -> None:
        super().__init__(f"igs2gs: {message}")

    @property
    def message(self) -> str:
        """The text printed for the user."""
        return str(self.code)


class IGS2GSConfigError(IGS2GSError):
    """A bad option, path, checkpoint or model: found before training starts, or when first used."""


class SplatsNotUpdatedError(IGS2GSError):
    """A whole dataset-update round left every Gaussian unchanged: training does not reach the splats."""


class EditsFailingError(RuntimeError):
    """Edits fail view after view: the cause is not one view, so carrying on would only skip them all.

    A RuntimeError, not an `IGS2GSError`: its cause is likely a bug, and the traceback shows where.
    """

    def __init__(self, message: str) -> None:
        super().__init__(f"igs2gs: {message}")
