"""Exceptions a user can cause; the command-line tools print them as one line and exit non-zero."""

__all__ = [
    "PgtrainError",
    "ConfigError",
    "RegistryError",
    "CheckpointError",
    "DatasetError",
    "DatasetNotFoundError",
    "DivergedError",
    "first_line",
]


class PgtrainError(Exception):
    """Base class of errors caused by user input (configs, files, names)."""


class ConfigError(PgtrainError, ValueError):
    """A config file, key, override or value is wrong; the message names the key."""


class RegistryError(PgtrainError, LookupError):
    """A name is not registered, or a taken name is registered again with another object."""


class CheckpointError(PgtrainError, RuntimeError):
    """A checkpoint is missing, corrupt, unsafe or does not fit."""


class DivergedError(PgtrainError, FloatingPointError):
    """Training produced a non-finite loss or gradient; the message says what to try."""


class DatasetError(PgtrainError, ValueError):
    """A dataset file is malformed or unreadable; the message names the file."""


class DatasetNotFoundError(PgtrainError, FileNotFoundError):
    """A dataset file or folder does not exist; the message names the path."""


def first_line(error: BaseException) -> str:
    """The first non-empty line of an exception's message (its type name when there is none),
    for quoting a library's error inside a one-line message of ours."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
