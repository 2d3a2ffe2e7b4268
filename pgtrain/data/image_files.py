"""A user's own image files: ``--input`` arguments (files, folders, globs) expanded to a list of
images, and images read as they are displayed (EXIF orientation applied, RGB)."""

import glob
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageOps

from pgtrain.errors import ConfigError, DatasetError, DatasetNotFoundError, first_line

__all__ = ["IMAGE_EXTENSIONS", "check_image_file", "list_image_files", "read_image"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
"""The file name endings (any case) taken from a folder or a glob."""

# PIL's errors for a file that is not an image (UnidentifiedImageError is an OSError), or a
# broken one.
_READ_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def list_image_files(inputs: Sequence[str], option: str = "--input") -> list[str]:
    """Expands files, folders and globs, in any mix, to a list of image files.

    A file is taken as it is (whatever its ending); a folder gives the images directly inside it
    (by `IMAGE_EXTENSIONS`), sorted by name; a glob (``photos/*.jpg``, ``**`` across folders)
    gives its matching images (folders it matches give their images), sorted. A file given
    twice, by any of these ways, is listed once, where it first appears.

    Args:
        inputs: the paths, folders and globs, as the user gave them.
        option: the command-line option they came from, for error messages.

    Raises:
        ConfigError: one of `inputs` gives no image (it names which), or none were given.
    """
    if not inputs:
        raise ConfigError(f"{option}: give at least one image file, folder or glob")
    files: list[str] = []
    seen: set[str] = set()
    for given in inputs:
        found = _expand(given)
        if not found:
            raise ConfigError(_nothing_found(given, option))
        for path in found:
            key = os.path.normcase(os.path.realpath(path))
            if key not in seen:
                seen.add(key)
                files.append(path)
    return files


def _expand(given: str) -> list[str]:
    path = os.path.expanduser(given)
    if os.path.isfile(path):
        return [path]
    if os.path.isdir(path):
        return _images_in(path)
    if not glob.has_magic(path):
        return []
    found = []
    for match in sorted(glob.glob(path, recursive=True)):
        if os.path.isdir(match):
            found.extend(_images_in(match))
        elif _is_image_name(match):
            found.append(match)
    return found


def _images_in(folder: str) -> list[str]:
    names = sorted(name for name in os.listdir(folder) if _is_image_name(name))
    return [p for p in (os.path.join(folder, n) for n in names) if os.path.isfile(p)]


def _is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _nothing_found(given: str, option: str) -> str:
    path = os.path.expanduser(given)
    endings = "/".join(e.lstrip(".") for e in IMAGE_EXTENSIONS)
    if os.path.isdir(path):
        return f"{option} '{given}' is a folder without images ({endings}); give another folder"
    if glob.has_magic(path):
        return f"{option} '{given}' matches no image ({endings}); check the pattern"
    return f"{option} '{given}' does not exist; give an image file, a folder or a glob"


def check_image_file(path: str) -> tuple[int, int]:
    """Opens an image file's header only (no decoding); returns its stored (height, width).

    Raises:
        DatasetNotFoundError: the file does not exist.
        DatasetError: it is not an image PIL can read (naming the file).
    """
    _check_exists(path)
    try:
        with Image.open(path) as file:
            return file.height, file.width
    except _READ_ERRORS as exc:
        raise DatasetError(_unreadable(path, exc)) from exc


def read_image(path: str) -> np.ndarray:
    """Reads an image as it is displayed: EXIF orientation applied (phone photos store pixels
    unrotated plus a tag), converted to RGB (grey, palette, alpha and CMYK images too).

    Returns:
        An H x W x 3 uint8 array, H x W in the displayed orientation.

    Raises:
        DatasetNotFoundError: the file does not exist.
        DatasetError: it cannot be decoded (naming the file).
    """
    _check_exists(path)
    try:
        with Image.open(path) as file:
            shown = ImageOps.exif_transpose(file)
            return np.array(shown.convert("RGB"))
    except _READ_ERRORS as exc:
        raise DatasetError(_unreadable(path, exc)) from exc


def _check_exists(path: str) -> None:
    if not os.path.isfile(path):
        raise DatasetNotFoundError(f"image '{path}' does not exist; check the path")


def _unreadable(path: str, exc: BaseException) -> str:
    return f"cannot read image '{path}': {first_line(exc)}; replace the file or leave it out"
