"""The exceptions hbjax raises on bad input, one class a kind of fault.

Every class derives from :class:`HbjaxError` (so a command-line tool catches one type and prints its
message as one line) and from ``ValueError`` (so code written against earlier releases, which raised
plain ``ValueError``, keeps working).
"""

from __future__ import annotations


class HbjaxError(ValueError):
    """Base of every error hbjax raises on bad input; its message names the problem."""


class ConfigError(HbjaxError):
    """A config value is missing, of the wrong type or out of range, or the parts do not fit."""


class InputError(HbjaxError):
    """An array passed to a library function is malformed: shape, dtype, NaN, range, labels."""


BadInputError = InputError


class DataError(HbjaxError):
    """A data source is missing, empty, unreadable or malformed."""


class CheckpointError(HbjaxError):
    """A checkpoint file is missing, truncated, not a checkpoint, or does not match its metadata."""


class PortingError(HbjaxError):
    """Weights do not fit the architecture they are ported to."""


class RunDirError(HbjaxError):
    """A run directory cannot be used: not a directory, not writable, or holding foreign files."""


__all__ = [
    "BadInputError", "CheckpointError", "ConfigError", "DataError", "HbjaxError", "InputError",
    "PortingError", "RunDirError",
]  # fmt: skip
