"""Checkpoint files: atomic writes, safe reads, and checks of what may go into a file."""

import contextlib
import os
import re
import shutil
from collections import Counter, OrderedDict
from collections.abc import Mapping
from typing import Any

import torch
from iopath.common.file_io import PathManager

from pgtrain.errors import CheckpointError
from pgtrain.utils import sharding
from pgtrain.utils.file_io import is_local, write_atomically

__all__ = [
    "check_finite",
    "check_plain",
    "is_local",
    "read_checkpoint",
    "remove_stale_temp_files",
    "write_atomically",
]

_UNSAFE_MESSAGE = (
    "refused: it contains objects other than tensors and plain values, which could run code "
    "when loaded"
)
# Leaf types torch's weights_only unpickler rebuilds without importing anything else.
_PLAIN_LEAVES = (
    type(None),
    bool,
    int,
    float,
    complex,
    str,
    bytes,
    bytearray,
    torch.dtype,
    torch.device,
    torch.layout,
    torch.Size,
)
# Temporary files are ".<final name>.<8 hex>.tmp" next to the final file.
_TEMP_FILE = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp$")
_PLAIN_MAPPINGS = (dict, OrderedDict, Counter)
_PLAIN_SEQUENCES = (list, tuple, set)


def remove_stale_temp_files(folder: str) -> list[str]:
    """Deletes the temporary files (and sharded checkpoints' temporary folders) that saves
    killed mid-write left in a local `folder`.

    Call it only when no other process saves into `folder`, e.g. at the first save of a run.

    Returns:
        The names of the deleted files.
    """
    if not is_local(folder) or not os.path.isdir(folder):
        return []
    stale = [name for name in os.listdir(folder) if _TEMP_FILE.match(name)]
    for name in stale:
        path = os.path.join(folder, name)
        with contextlib.suppress(OSError):
            if os.path.isdir(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
    return stale


def read_checkpoint(path_manager: PathManager, path: str) -> Any:
    """Loads a checkpoint file with ``torch.load(weights_only=True)`` onto the CPU.

    Raises:
        CheckpointError: The file is missing, unreadable, or contains objects that could run
            code when loaded.
    """
    local = _local_copy(path_manager, path)
    try:
        return torch.load(local, map_location="cpu", weights_only=True)
    except FileNotFoundError as e:  # a handler's local path can be a missing file too
        raise CheckpointError(f"Checkpoint file {path} does not exist; check the path") from e
    except Exception as e:  # torch reports a damaged file with many exception types
        message = str(e)
        if "TorchScript archive" in message:
            raise CheckpointError(
                f"Checkpoint {path} is a TorchScript program (torch.jit.save), not a checkpoint "
                "of weights; save model.state_dict() with torch.save, or load its weights from "
                "torch.jit.load(path).state_dict() where you trust the file"
            ) from e
        if "Weights only load failed" in message:
            found = re.search(r"GLOBAL (\S+)", message)
            if found or "Can only build" in message or "Can only create" in message:
                what = f" (found {found.group(1)})" if found else ""
                raise CheckpointError(
                    f"Checkpoint {path} {_UNSAFE_MESSAGE}{what}; load only files saved as "
                    "tensors and plain values, or convert it where you trust the source"
                ) from e
        reason = ": ".join(part for part in (type(e).__name__, _reason(message)) if part)
        raise CheckpointError(
            f"Checkpoint {path} is not a readable checkpoint (truncated or corrupt: {reason}); "
            "re-create it or use another file"
        ) from e


def _reason(message: str) -> str:
    """Returns the informative line of a torch.load error, without torch's generic advice."""
    boilerplate = ("Weights only load failed", "Please file an issue", "Check the documentation")
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(boilerplate)]
    return (useful or lines or [""])[0][:200]


def _local_copy(path_manager: PathManager, path: str) -> str:
    """Returns a local file for `path`, fetching it if it is not local."""
    if is_local(path):
        if not os.path.isfile(path):
            raise CheckpointError(
                f"Checkpoint file {path} does not exist; check the path "
                "(e.g. train.init_checkpoint) or the output folder you resume from"
            )
        return path
    try:
        return path_manager.get_local_path(path)
    except Exception as e:  # handlers raise their own types for a missing/unreachable file
        raise CheckpointError(
            f"Checkpoint {path} could not be fetched ({type(e).__name__}: {e}); check the URI, "
            "the network, or download it and pass a local path"
        ) from e


def check_plain(value: Any, where: str, *, sharded: bool = False) -> None:
    """Checks that `value` holds only tensors and plain Python values, recursively; `sharded`
    (a sharded checkpoint, whose tensors DCP writes shard by shard) also accepts DTensors.

    Raises:
        CheckpointError: Naming the first key path (e.g. ``trainer.hooks.2.best``) whose value
            ``torch.load(weights_only=True)`` would refuse.
    """
    kind = type(value)
    if kind in (torch.Tensor, torch.nn.Parameter) or kind in _PLAIN_LEAVES:
        return
    if sharded and sharding.is_sharded(value):
        return
    if kind in _PLAIN_MAPPINGS:
        for key, item in value.items():
            check_plain(key, f"{where} (a key)")
            check_plain(item, f"{where}.{key}", sharded=sharded)
        return
    if kind in _PLAIN_SEQUENCES:
        for i, item in enumerate(value):
            check_plain(item, f"{where}.{i}", sharded=sharded)
        return
    raise CheckpointError(
        f"Cannot save checkpoint: '{where}' is a {kind.__module__}.{kind.__qualname__}; a "
        "checkpoint holds only tensors and plain Python values (so it loads with "
        "weights_only=True): convert it in the state_dict() that returns it (e.g. float(x), "
        "x.tolist(), torch.as_tensor(x))"
    )


def check_finite(state: Mapping[str, Any], name: str) -> None:
    """Checks that every floating tensor of a model state is finite.

    Raises:
        CheckpointError: Naming the first tensor with NaN or Inf values.
    """
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            continue
        if not (value.is_floating_point() or value.is_complex()):
            continue
        if not bool(torch.isfinite(value).all()):
            raise CheckpointError(
                f"Refusing to save checkpoint '{name}': model tensor '{key}' has NaN/Inf values, "
                "so training diverged; the previous checkpoints are kept. Resume from the last "
                "one with a lower LR or gradient clipping"
            )
