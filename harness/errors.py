"""The one exception tree of the harness.

Every error a user can fix is a `HilError`: its message says what failed and
its `hint` what to do. The CLI prints it as one line and exits 2. Subclasses
are named by who has to act.
"""

from __future__ import annotations


class HilError(Exception):
    """Base of every error the user can act on (exit code 2)."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:  # one line, hint after a dash
        if self.hint:
            return f"{self.message} — {self.hint}"
        return self.message


class ConfigError(HilError):
    """Bad arguments, options, config files or board definitions."""


class DataError(HilError):
    """Training/validation data that is missing, malformed or unusable."""


class ModelError(HilError):
    """A model file that is missing, corrupt, or not what the stage needs."""


class ToolError(HilError):
    """An external tool (compiler, PlatformIO, QEMU, programmer) is missing or failed."""


class BuildError(ToolError):
    """The firmware could not be generated or built."""


class FlashError(ToolError):
    """The firmware could not be put on the board."""


class DeviceError(HilError):
    """The device or its port: missing, busy, silent, or holding another model."""


class ProtocolError(DeviceError):
    """The link delivered something the protocol cannot accept."""
