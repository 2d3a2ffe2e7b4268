"""Atomic file writes: readers see the old content or the complete new one, never a part."""

import contextlib
import os
import secrets
import tempfile
from collections.abc import Callable
from typing import IO

from iopath.common.file_io import PathManager, g_pathmgr

from pgtrain.errors import ConfigError

__all__ = ["is_local", "output_path", "write_atomically", "write_text_atomically"]


def is_local(path: str) -> bool:
    """Returns whether `path` is a local file path (not a URI such as ``s3://`` or ``https://``)."""
    return "://" not in path


def output_path(path: str, option: str, *, folder: bool = False) -> str:
    """Makes a tool's output path usable before any work is done: creates its folder (the path
    itself with ``folder=True``) and checks it can be written to.

    Raises:
        ConfigError: naming `option` (e.g. ``--out``) and the path, in one line.
    """
    if not is_local(path):
        return path  # iopath writes remote paths itself
    where = path if folder else (os.path.dirname(path) or ".")
    if folder and os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"{option} '{path}' is a file, not a folder; give a folder")
    try:
        os.makedirs(where, exist_ok=True)
    except OSError as e:
        raise ConfigError(
            f"{option} '{path}': cannot create folder '{where}' ({e.strerror}); give a path in a "
            "writable folder"
        ) from e
    if not os.access(where, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} '{path}': folder '{where}' is not writable; give another path")
    return path


def write_atomically(
    path_manager: PathManager, path: str, write: Callable[[IO[bytes]], None]
) -> None:
    """Writes a file so that readers see either the old or the complete new content.

    A local path gets a temporary file in the same folder (same file system, so the rename is
    atomic), flushed and fsynced before ``os.replace``. Other paths are written to a local
    temporary file and copied with `path_manager`, as atomic as their storage makes a copy.
    """
    if not is_local(path):
        _write_via_local_copy(path_manager, path, write)
        return
    folder = os.path.dirname(path) or "."
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{secrets.token_hex(4)}.tmp")
    try:
        # "xb" rather than mkstemp: the file gets the usual umask permissions, not 0600.
        with open(tmp, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    _fsync_folder(folder)


def write_text_atomically(path: str, text: str, path_manager: PathManager = g_pathmgr) -> None:
    """Replaces the file `path` with `text` (UTF-8) atomically; see `write_atomically`."""
    write_atomically(path_manager, path, lambda f: f.write(text.encode()))


def _write_via_local_copy(
    path_manager: PathManager, path: str, write: Callable[[IO[bytes]], None]
) -> None:
    """Writes to a local temporary file, then copies it to the non-local `path`."""
    fd, tmp = tempfile.mkstemp(suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        path_manager.copy_from_local(tmp, path, overwrite=True)
    finally:
        with contextlib.suppress(OSError):
            os.remove(tmp)


def _fsync_folder(folder: str) -> None:
    """Makes a rename in `folder` durable; some file systems cannot, which is harmless."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
