"""Sharded checkpoints: a folder every process writes its shards into, with
torch.distributed.checkpoint (DCP).

A sharded checkpoint ``model_0000099.dcp/`` holds what a single-file checkpoint holds, split in
two: every tensor (model weights and the name-keyed optimizer state, sharded DTensors under FSDP)
goes through DCP, each process writing its own shards (a replicated tensor is written once, by the
lowest rank that has it, so the file holds rank 0's values as a single file would); everything
else (iteration, hook states, the RNG states' plain values, extras) is ``state.pth``, written by
rank 0, with a reference ``{"__pgtrain_tensor__": key}`` where each tensor was.

Reading needs no process group and runs no code from the files: ``state.pth`` loads with
``weights_only=True``, DCP's ``.metadata`` with an unpickler that builds only DCP's own metadata
records, the tensor files with ``weights_only=True`` (DCP's own reader), and nothing but tensors
is read from DCP (its pickled "bytes" entries are refused). The reader rebuilds the whole
checkpoint dict with whole tensors, so it loads into any number of processes (a shard of a whole
tensor is cut where it is needed) and through the same code as a single file.

The save is atomic: everything is written into a hidden temporary folder next to the final one,
which rank 0 renames into place once complete; the ``last_checkpoint`` pointer moves after that.
A folder of the same name (``model_final.dcp`` saved again) is first renamed aside to
``.<name>.previous``, which no cleanup deletes while it is the only copy and which the reader
falls back to, so a kill between the two renames leaves the previous checkpoint readable.
"""

import contextlib
import io
import logging
import os
import pickle
import secrets
import shutil
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import torch
import torch.distributed as dist
from iopath.common.file_io import PathManager

from pgtrain.checkpoint.file_io import read_checkpoint
from pgtrain.errors import CheckpointError
from pgtrain.utils import comm

__all__ = [
    "SHARDED_SUFFIX",
    "is_sharded_checkpoint",
    "read_sharded",
    "save_sharded",
    "split_tensors",
    "join_tensors",
]

logger = logging.getLogger(__name__)

SHARDED_SUFFIX = ".dcp"
STATE_FILE = "state.pth"
_REF = "__pgtrain_tensor__"
_ASIDE_SUFFIX = ".previous"
# The classes DCP's metadata file is made of; the unpickler builds these and nothing else.
_METADATA_CLASSES = {
    ("torch.distributed.checkpoint.metadata", name)
    for name in (
        "Metadata",
        "MetadataIndex",
        "StorageMeta",
        "TensorProperties",
        "TensorStorageMetadata",
        "ChunkStorageMetadata",
        "BytesStorageMetadata",
        "_MEM_FORMAT_ENCODING",
    )
} | {
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch.serialization", "_get_layout"),
    ("torch", "Size"),
    ("pathlib", "PosixPath"),
    ("pathlib", "WindowsPath"),
    ("collections", "OrderedDict"),
}


def is_sharded_checkpoint(path: str) -> bool:
    """Whether `path` names a sharded checkpoint folder (``.dcp``, or a folder with DCP's
    ``.metadata``)."""
    return path.rstrip("/").endswith(SHARDED_SUFFIX) or os.path.isfile(
        os.path.join(path, ".metadata")
    )


def split_tensors(tree: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """Returns `tree` with each tensor replaced by a reference, and the tensors by key (the path
    of dict keys and list positions to it, joined by ``/``)."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(node: Any, path: tuple[str, ...]) -> Any:
        if isinstance(node, torch.Tensor):
            key = "/".join(path)
            tensors[key] = node
            return {_REF: key}
        if isinstance(node, Mapping):
            return type(node)((k, walk(v, (*path, str(k)))) for k, v in node.items())
        if isinstance(node, list | tuple):
            return type(node)(walk(v, (*path, str(i))) for i, v in enumerate(node))
        return node

    return walk(tree, ()), tensors


def join_tensors(skeleton: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    """The inverse of `split_tensors`: puts the tensors back where their references are."""
    if isinstance(skeleton, Mapping):
        if set(skeleton) == {_REF}:
            return tensors[skeleton[_REF]]
        return type(skeleton)((k, join_tensors(v, tensors)) for k, v in skeleton.items())
    if isinstance(skeleton, list | tuple):
        return type(skeleton)(join_tensors(v, tensors) for v in skeleton)
    return skeleton


def save_sharded(data: Mapping[str, Any], path: str, *, writer: bool) -> None:
    """Writes `data` as a sharded checkpoint folder `path`; every process calls it together.

    Args:
        data: the checkpoint dict (tensors, DTensors and plain values); this process's view.
        path: the final folder (local); replaced if it exists.
        writer: whether this process writes ``state.pth`` and renames the folder (rank 0).

    Raises:
        CheckpointError: any process failed to write (on every process, so none waits for it);
            the folder's previous version, if any, is intact.
    """
    # Imported here: torch.distributed.checkpoint takes over a second to import, which every
    # tool would pay at start for a format most runs do not use.
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException
    from torch.distributed.checkpoint.default_planner import DefaultSavePlanner

    distributed = dist.is_available() and dist.is_initialized()
    folder, name = os.path.split(os.path.abspath(path))
    temp = _shared_temp_name(folder, name, distributed)
    skeleton, tensors = split_tensors(dict(data))
    error = None
    try:
        with _single_process_is_meant():
            dcp.save(
                tensors,
                storage_writer=dcp.FileSystemWriter(temp),
                planner=DefaultSavePlanner(dedup_save_to_lowest_rank=True),
                no_dist=not distributed,
            )
    except (Exception, CheckpointException) as e:  # DCP reports every rank's failure on each
        error = e
    if writer and error is None:
        try:
            _remove_replaced(folder)
            with open(os.path.join(temp, STATE_FILE), "wb") as f:
                torch.save(skeleton, f)
                f.flush()
                os.fsync(f.fileno())
            _replace_folder(temp, path)
        except OSError as e:
            error = e
    if any(comm.all_gather(error is not None)):
        if writer:
            shutil.rmtree(temp, ignore_errors=True)
        reason = _reason(error) if error else "another process failed"
        raise CheckpointError(
            f"Could not write sharded checkpoint {path} ({reason}); "
            "check that the output folder is writable and has free space; the previous "
            "checkpoints are intact"
        ) from error


def read_sharded(path: str) -> dict[str, Any]:
    """Reads a sharded checkpoint folder into one dict of whole tensors and plain values.

    Needs no process group: each process that calls it reads what it needs on its own.

    Raises:
        CheckpointError: the folder is missing, incomplete, or holds something that is not
            tensors and plain values.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    if not os.path.isdir(path) and os.path.isdir(_aside(path)):
        # A save that replaced `path` was killed between its two renames: the previous folder,
        # which last_checkpoint still names, is complete in the aside name.
        logger.warning("%s is being replaced; reading its previous copy %s", path, _aside(path))
        path = _aside(path)
    state_file = os.path.join(path, STATE_FILE)
    if not os.path.isdir(path):
        raise CheckpointError(f"Sharded checkpoint {path} does not exist; check the path")
    if not os.path.isfile(state_file):
        raise CheckpointError(
            f"{path} is not a complete pgtrain sharded checkpoint (no {STATE_FILE}); use another "
            "checkpoint of the run"
        )
    skeleton = read_checkpoint(PathManager(), state_file)
    reader = _safe_reader(path)
    try:
        metadata = reader.read_metadata()
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ValueError) as e:
        raise CheckpointError(
            f"Sharded checkpoint {path} has unreadable metadata ({type(e).__name__}: {e}); "
            "re-create it or use another checkpoint"
        ) from e
    keys = _referenced_keys(skeleton)
    entries = metadata.state_dict_metadata
    missing = [k for k in keys if k not in entries]
    if missing:
        raise CheckpointError(
            f"Sharded checkpoint {path} lacks tensors its {STATE_FILE} refers to (e.g. "
            f"{missing[0]}); it is incomplete, use another checkpoint of the run"
        )
    template = {}
    for key in keys:
        entry = entries[key]
        if not isinstance(entry, TensorStorageMetadata):
            raise CheckpointError(
                f"Sharded checkpoint {path}: '{key}' is a pickled object, not a tensor, which "
                "could run code when loaded; load only checkpoints pgtrain saved"
            )
        template[key] = torch.empty(entry.size, dtype=entry.properties.dtype)
    try:
        with _single_process_is_meant():
            dcp.load(template, storage_reader=reader, no_dist=True)
    except (Exception, CheckpointException) as e:  # a truncated or damaged shard file
        raise CheckpointError(
            f"Sharded checkpoint {path} could not be read ({_reason(e)}); it is damaged, use "
            "another checkpoint of the run"
        ) from e
    return join_tensors(skeleton, template)


@contextlib.contextmanager
def _single_process_is_meant() -> Iterator[None]:
    """Silences DCP's warning that it assumes one process: reading always is, on purpose."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def _reason(error: BaseException) -> str:
    """The first line of what went wrong; for DCP's collected failures, the first rank's."""
    failures = getattr(error, "failures", None)
    if isinstance(failures, Mapping) and failures:  # a CheckpointException: rank -> error
        error = next(iter(failures.values()))
    lines = [line for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0][:200] if lines else ''}"


def _referenced_keys(skeleton: Any) -> list[str]:
    keys: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            if set(node) == {_REF}:
                keys.append(node[_REF])
                return
            for value in node.values():
                walk(value)
        elif isinstance(node, list | tuple):
            for value in node:
                walk(value)

    walk(skeleton)
    return keys


def _safe_reader(path: str) -> Any:
    """DCP's file reader for `path`, with a metadata unpickler that builds only DCP's metadata
    records."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import Metadata, StorageMeta

    class SafeReader(FileSystemReader):
        def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
            with open(os.path.join(self.path, ".metadata"), "rb") as f:
                metadata = _MetadataUnpickler(io.BytesIO(f.read())).load()
            if not isinstance(metadata, Metadata):
                raise pickle.UnpicklingError("the metadata file does not hold DCP metadata")
            if getattr(metadata, "storage_meta", None) is None:
                metadata.storage_meta = StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata

    return SafeReader(path)


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _METADATA_CLASSES:
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise pickle.UnpicklingError(
            f"refused {module}.{name}: not part of a checkpoint's metadata, it could run code"
        )


def _shared_temp_name(folder: str, name: str, distributed: bool) -> str:
    """A hidden temporary folder next to the final one, the same name on every process."""
    token = [secrets.token_hex(4)]
    if distributed:
        dist.broadcast_object_list(token, src=0)
    return os.path.join(folder, f".{name}.{token[0]}.tmp")


def _aside(path: str) -> str:
    """Where `_replace_folder` keeps the previous `path` while the new one is renamed in: a
    name the stale-temporary cleanup leaves alone, because for a moment it is the only copy."""
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}{_ASIDE_SUFFIX}")


def _replace_folder(temp: str, path: str) -> None:
    """Renames `temp` to `path`; an existing `path` is moved aside first and then deleted, so
    at every moment one complete folder is there or in the aside name (which `read_sharded`
    falls back to)."""
    aside = _aside(path)
    if os.path.exists(path):
        shutil.rmtree(aside, ignore_errors=True)  # left by a replace killed after its rename
        os.rename(path, aside)
    os.rename(temp, path)
    shutil.rmtree(aside, ignore_errors=True)


def _remove_replaced(folder: str) -> None:
    """Deletes the aside copies whose folder is back in place (a replace killed before its
    cleanup); an aside without its folder is the only copy and stays."""
    with contextlib.suppress(OSError):
        for name in os.listdir(folder):
            final = name[1 : -len(_ASIDE_SUFFIX)]
            if name.startswith(".") and name.endswith(_ASIDE_SUFFIX) and final:
                if os.path.isdir(os.path.join(folder, final)):
                    shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
