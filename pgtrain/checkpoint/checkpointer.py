"""Checkpointer: saves and loads a model, its training state and RNG states on iopath paths."""

import logging
import os
import re
import shutil
from collections.abc import Sequence
from typing import Any

import torch
from iopath.common.file_io import HTTPURLHandler, PathManager
from torch import nn

from pgtrain.checkpoint.file_io import (
    check_finite,
    check_plain,
    read_checkpoint,
    remove_stale_temp_files,
    write_atomically,
)
from pgtrain.checkpoint.model_state import (
    check_exact_fit,
    check_loadable_finite,
    load_model_state,
    pretrained_parameter_names,
    split_checkpoint,
)
from pgtrain.checkpoint.report import CheckpointReport
from pgtrain.checkpoint.rng import capture_rng_states, restore_rng_states
from pgtrain.checkpoint.sharded import (
    SHARDED_SUFFIX,
    is_sharded_checkpoint,
    read_sharded,
    save_sharded,
)
from pgtrain.errors import CheckpointError, ConfigError, PgtrainError, first_line
from pgtrain.utils import comm, sharding
from pgtrain.utils.checks import is_whole
from pgtrain.utils.suggest import did_you_mean

__all__ = ["Checkpointer"]

logger = logging.getLogger("pgtrain.checkpoint")

_POINTER = "last_checkpoint"
# Top-level keys the checkpointer writes itself; checkpointables and extras may not use them.
_RESERVED = ("model", "rng", "fresh")
_NUMBERED = re.compile(r"^(?P<prefix>.+)_(?P<iter>\d+)$")
_SUFFIXES = (".pth", SHARDED_SUFFIX)


class Checkpointer:
    """Saves and loads a model plus objects with ``state_dict()`` / ``load_state_dict()``.

    A file holds ``{"model": ..., <checkpointable name>: ..., "rng": ..., "fresh": [...],
    **extra}``, only tensors and plain values, so it loads with ``weights_only=True``.
    ``sharded=True`` (FSDP runs) saves the same dict as a folder ``<name>.dcp`` that every process
    writes its shards into (`pgtrain.checkpoint.sharded`); `load` reads either format into any
    number of processes.

    Attributes:
        model: The model (unwrapped from DDP / DataParallel).
        save_dir: Folder (local path or iopath URI) of checkpoints and the ``last_checkpoint``
            pointer.
        checkpointables: Name -> object whose state is saved under that name.
        fresh: Parameter names the last load did not provide; written into every save so that
            a resumed run selects the same ``fresh`` parameters as the run that started it.
        path_manager: The iopath ``PathManager`` (local files and http(s) URLs); replace it or
            register handlers on it for other storage.
    """

    def __init__(
        self,
        model: nn.Module,
        save_dir: str = "",
        *,
        keep_last: int | None = None,
        save_to_disk: bool = True,
        sharded: bool = False,
        **checkpointables: Any,
    ) -> None:
        """Creates a checkpointer.

        Args:
            model: The model; a DDP / DataParallel wrapper is unwrapped.
            save_dir: Where `save` writes; "" disables saving.
            keep_last: Keep only this many numbered checkpoints (``model_0000099.pth``); None
                keeps all. ``model_final.pth`` is never deleted.
            save_to_disk: False on non-main ranks: `save` does nothing there (or, sharded,
                writes only this process's shards).
            sharded: save sharded checkpoint folders; every process must call `save`.
            **checkpointables: Objects to save and restore, e.g. ``trainer=trainer``.
        """
        model = comm.unwrap_model(model)
        if keep_last is not None and not is_whole(keep_last, at_least=1):
            raise ConfigError(
                f"keep_last={keep_last!r} must be a positive integer, or None to keep all"
            )
        self.model = model
        self.save_dir = save_dir
        self.keep_last = keep_last
        self.save_to_disk = save_to_disk
        self.sharded = sharded
        self.checkpointables: dict[str, Any] = {}
        for name, obj in checkpointables.items():
            self.register(name, obj)
        self.fresh: list[str] = []
        self._cleaned_up = False
        self.path_manager = PathManager()
        self.path_manager.register_handler(HTTPURLHandler())

    def register(self, name: str, obj: Any) -> None:
        """Adds a checkpointable: `obj`'s ``state_dict()`` is saved under `name` from now on.

        A run registers its trainer once the trainer exists, after the weights were loaded, and
        then restores the trainer's state from that load with `restore_state`.
        """
        if name in _RESERVED:
            raise ConfigError(f"Checkpointable name '{name}' is reserved; use another name")
        if not (hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict")):
            raise ConfigError(
                f"Checkpointable '{name}' ({type(obj).__name__}) needs state_dict() and "
                "load_state_dict() methods"
            )
        self.checkpointables[name] = obj

    def save(self, name: str, **extra: Any) -> str | None:
        """Writes ``save_dir/<name>.pth`` (sharded: ``<name>.dcp/``) atomically and points
        ``last_checkpoint`` at it.

        In a multi-process run every process calls it (the hooks do): it gathers every rank's
        RNG states, so each rank's random streams continue on resume.

        Args:
            name: File name without ``.pth``, e.g. ``model_0000099``.
            **extra: Plain values to store, e.g. ``iteration=99``.

        Returns:
            The path written, or None when saving is disabled (no save_dir, or not main rank
            of a single-file save).

        Raises:
            CheckpointError: The model has NaN/Inf values (nothing is written), a state holds
                objects other than tensors and plain values, or the file could not be written.
        """
        if not self.save_dir:
            return None
        # Every rank's random streams (dropout, augmentation), gathered while every rank is here:
        # restoring rank 0's alone would restart the other ranks' streams on resume.
        rng = _rng_of_every_rank()
        if not (self.save_to_disk or self.sharded):
            return None
        if not name or os.path.basename(name) != name:
            raise CheckpointError(
                f"Checkpoint name {name!r} must be a plain file name; it is saved into save_dir"
            )
        clash = sorted(set(extra) & self._reserved_keys())
        if clash:
            raise CheckpointError(f"save(): extra keys {clash} clash with saved state; rename them")
        data = self._gather(name, extra, rng)
        if not self._cleaned_up and self.save_to_disk:  # leftovers of a run killed while saving
            self._cleaned_up = True
            for stale in remove_stale_temp_files(self.save_dir):
                logger.info("Deleted %s, left by a save that was interrupted", stale)
        basename = f"{name}{SHARDED_SUFFIX if self.sharded else '.pth'}"
        path = self._join(basename)
        try:
            self.path_manager.mkdirs(self.save_dir)
            if self.sharded:
                save_sharded(data, path, writer=self.save_to_disk)
                if not self.save_to_disk:
                    return path
            else:
                write_atomically(self.path_manager, path, lambda f: torch.save(data, f))
            # The pointer moves only after the checkpoint is complete on disk.
            pointer = self._join(_POINTER)
            write_atomically(self.path_manager, pointer, lambda f: f.write(basename.encode()))
        except (OSError, RuntimeError) as e:
            # torch's zip writer reports a failed write (a full disk) as a RuntimeError.
            if isinstance(e, RuntimeError) and not _is_write_failure(e):
                raise
            raise CheckpointError(
                f"Could not write checkpoint {path} ({_first_line(e)}); check that the output "
                "folder is writable and has free space; the previous checkpoints are intact"
            ) from e
        logger.info("Saved checkpoint %s", path)
        self._prune(name)
        return path

    def _gather(self, name: str, extra: dict[str, Any], rng: dict[str, Any]) -> dict[str, Any]:
        """Collects everything `save` writes, after checking it is finite and plain."""
        model_state = self.model.state_dict()
        self._check_finite(model_state, name)
        data: dict[str, Any] = {"model": model_state}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data["rng"] = rng
        data["fresh"] = list(self.fresh)
        data.update(extra)
        for key, value in data.items():
            check_plain(value, key, sharded=self.sharded)
        return data

    def _check_finite(self, model_state: dict[str, Any], name: str) -> None:
        """`check_finite` on this process's values (its shards under FSDP); a sharded save
        stops on every process when any of them found a NaN."""
        local = {k: sharding.local_view(v) for k, v in model_state.items()}
        try:
            check_finite(local, name)
            error = None
        except CheckpointError as e:
            error = e
        if self.sharded and any(comm.all_gather(error is not None)):
            raise error or CheckpointError(
                f"Refusing to save checkpoint '{name}': another process's shard of the model has "
                "NaN/Inf values (its log names the tensor); the previous checkpoints are kept"
            )
        if error is not None:
            raise error

    def _prune(self, name: str) -> None:
        """Deletes the oldest numbered checkpoints sharing `name`'s prefix beyond `keep_last`."""
        match = _NUMBERED.match(name)
        if self.keep_last is None or match is None:
            return
        pattern = re.compile(rf"^{re.escape(match['prefix'])}_(\d+)(\.pth|\{SHARDED_SUFFIX})$")
        just_written = f"{name}{SHARDED_SUFFIX if self.sharded else '.pth'}"
        try:
            files = self.path_manager.ls(self.save_dir)
        except OSError as e:
            logger.warning("Could not list %s to delete old checkpoints: %s", self.save_dir, e)
            return
        numbered = sorted((int(m[1]), f) for f in files if (m := pattern.match(f)))
        others = [f for _, f in numbered if f != just_written]
        for stale in others[: max(0, len(others) - (self.keep_last - 1))]:
            try:
                if stale.endswith(SHARDED_SUFFIX):
                    shutil.rmtree(self._join(stale))
                else:
                    self.path_manager.rm(self._join(stale))
                logger.info("Deleted old checkpoint %s (keep_last=%d)", stale, self.keep_last)
            except OSError as e:  # a failed cleanup must not stop training
                logger.warning("Could not delete old checkpoint %s: %s", stale, e)

    def load(
        self,
        path: str,
        checkpointables: list[str] | None = None,
        *,
        exact: bool = False,
        restore_state: bool = True,
        exclude: Sequence[str] = (),
    ) -> CheckpointReport:
        """Loads model weights, and the chosen checkpointables, from a checkpoint file.

        A bare state_dict (e.g. a torchvision ``.pth``) loads as model weights. Keys whose shape
        differs from the model's are skipped with a warning; the report lists them.

        Args:
            path: Local path or URI; "" loads nothing.
            checkpointables: Names to restore; None restores all that the file holds and the RNG
                states (a full resume), [] loads the model only.
            exact: Refuse a file whose model keys or shapes differ from the model's (a resume
                continues the same model; a changed one starts a new run from the weights).
            restore_state: Restore the checkpointables and RNG states now; False keeps them in
                the report for `restore_state` (a run that builds its trainer after the
                weights), so the file is read once.
            exclude: Globs of the file's model keys to leave out (a head to train anew); their
                parameters count as fresh. Each glob must match a key.

        Raises:
            CheckpointError: The file is missing, corrupt, unsafe, has NaN/Inf weights, or does
                not fit.
        """
        if not path:
            logger.info("No checkpoint given: the model keeps its initialization")
            return CheckpointReport(path="")
        names = self._requested(checkpointables)
        logger.info("Loading checkpoint %s", path)
        data = read_any_checkpoint(path, self.path_manager)
        model_state, rest = split_checkpoint(data, path)
        check_loadable_finite(model_state, path)
        if exact:
            check_exact_fit(self.model, model_state, path)
        report = load_model_state(self.model, model_state, path, exclude)
        report.contents = rest
        if checkpointables is None:
            report.fresh = self._with_recorded_fresh(report.fresh, rest.get("fresh"))
        report.extra = {k: v for k, v in rest.items() if k not in self._reserved_keys()}
        self.fresh = list(report.fresh)
        if restore_state:
            self._restore(report, names, rng=checkpointables is None)
        logger.info(report.summary())
        return report

    def restore_state(self, report: CheckpointReport) -> None:
        """Restores every checkpointable and the RNG states from a load made with
        ``restore_state=False``, without reading the file again.

        Raises:
            CheckpointError: A checkpointable's saved state does not fit it.
        """
        self._restore(report, list(self.checkpointables), rng=True)
        restored = report.checkpointables + (["rng"] if report.rng_restored else [])
        logger.info("Restored %s from %s", ", ".join(restored) or "nothing", report.path)

    def _restore(self, report: CheckpointReport, names: list[str], *, rng: bool) -> None:
        contents = report.contents
        report.checkpointables = self._load_checkpointables(contents, names, report.path)
        if rng and "rng" in contents:
            report.rng_restored = _restore_rng(contents["rng"], report.path)

    def _requested(self, checkpointables: list[str] | None) -> list[str]:
        """Returns the checkpointable names to restore, checking that each is known."""
        if checkpointables is None:
            return list(self.checkpointables)
        for name in checkpointables:
            if name not in self.checkpointables:
                raise CheckpointError(
                    f"No checkpointable '{name}' in this Checkpointer"
                    f"{did_you_mean(name, self.checkpointables)}; known: "
                    f"{sorted(self.checkpointables)}"
                )
        return list(checkpointables)

    def _load_checkpointables(self, rest: dict[str, Any], names: list[str], path: str) -> list:
        """Restores each named checkpointable that the file holds; returns the restored names."""
        restored = []
        for name in names:
            if name not in rest:
                logger.warning("Checkpoint %s has no '%s'; it keeps its current state", path, name)
                continue
            try:
                self.checkpointables[name].load_state_dict(rest[name])
            except PgtrainError:
                raise
            except Exception as e:  # torch and user objects raise many types for a misfit
                raise CheckpointError(
                    f"Could not restore '{name}' from {path} ({type(e).__name__}: {e}); resume "
                    "with the config the checkpoint was trained with, or load its weights only "
                    "(without --resume)"
                ) from e
            restored.append(name)
        return restored

    def _with_recorded_fresh(self, computed: list[str], recorded: Any) -> list[str]:
        """Adds the fresh names a resumed file recorded to those computed now, in model order."""
        names = set(computed)
        if isinstance(recorded, list | tuple):
            names.update(n for n in recorded if isinstance(n, str))
        return [n for n, _ in self.model.named_parameters() if n in names]

    def has_checkpoint(self) -> bool:
        """Returns whether save_dir has a ``last_checkpoint`` pointer."""
        return bool(self.save_dir) and self.path_manager.exists(self._join(_POINTER))

    def get_checkpoint_file(self) -> str:
        """Returns the path the ``last_checkpoint`` pointer names, or "" if there is none.

        Raises:
            CheckpointError: The pointer exists but does not name a checkpoint file.
        """
        if not self.save_dir:
            return ""
        pointer = self._join(_POINTER)
        try:
            with self.path_manager.open(pointer, "rb") as f:
                raw = f.read()
        except OSError:
            return ""
        try:
            name = os.path.basename(raw.decode().strip())
        except UnicodeDecodeError:
            name = ""
        if not name.endswith(_SUFFIXES):
            raise CheckpointError(
                f"{pointer} does not name a checkpoint (it holds {raw[:40]!r}); write the name "
                f"of a checkpoint in {self.save_dir} into it (e.g. model_final.pth), or delete it "
                "to start the run anew"
            )
        return self._join(name)

    def resume_or_load(
        self,
        path: str,
        *,
        resume: bool = True,
        min_fraction: float = 0.5,
        restore_state: bool = True,
        exclude: Sequence[str] = (),
    ) -> CheckpointReport:
        """Resumes from save_dir's last checkpoint, or else loads initial weights.

        Args:
            path: Initial weights (model only), used when not resuming; "" for none.
            resume: If True and save_dir has a ``last_checkpoint``, load it with every
                checkpointable and the RNG states; training continues at its
                ``extra["iteration"] + 1``. The model must match it exactly.
            min_fraction: Initial weights that provide less than this fraction of the model's
                parameter values get a loud warning; none at all is an error.
            restore_state: On resume, restore the checkpointables and RNG states now (False:
                later, with `restore_state`).
            exclude: Globs of `path`'s model keys to leave out (not applied on resume: a run's
                own checkpoint continues whole).

        Raises:
            CheckpointError: The resumed checkpoint does not fit the model exactly, or the
                initial weights provide none of its parameters.
        """
        if resume and self.has_checkpoint():
            report = self.load(self.get_checkpoint_file(), exact=True, restore_state=restore_state)
            report.resumed = True
            return report
        report = self.load(path, checkpointables=[], exclude=exclude)
        if path:
            self._check_provided(report, path, min_fraction)
        pretrained = pretrained_parameter_names(self.model) if not path else set()
        if pretrained:
            # No initial checkpoint, but parts were built from pretrained weights (an ImageNet
            # backbone): everything else is new.
            report.fresh = [n for n, _ in self.model.named_parameters() if n not in pretrained]
            self.fresh = list(report.fresh)
            logger.info(
                "No initial checkpoint: %d parameters came pretrained with the model, %d are fresh",
                len(pretrained),
                len(report.fresh),
            )
        return report

    def _check_provided(self, report: CheckpointReport, path: str, min_fraction: float) -> None:
        """Refuses initial weights that fit no parameter; warns when they fit few."""
        fresh = set(report.fresh)
        sizes = {n: p.numel() for n, p in self.model.named_parameters()}
        total = sum(sizes.values())
        provided = sum(size for n, size in sizes.items() if n not in fresh)
        if sizes and provided == 0:
            raise CheckpointError(
                f"Initial checkpoint {path} provides none of the model's {len(sizes)} parameters "
                f"({_key_sample(report)}); is it a checkpoint of this model? Check "
                "train.init_checkpoint, or leave it empty to start from the initialization"
            )
        if total and provided / total < min_fraction:
            logger.warning(
                "Initial checkpoint %s provides only %.0f%% of the model's parameter values "
                "(%d of %d tensors); the rest start from their initialization",
                path,
                100 * provided / total,
                len(sizes) - len(fresh & set(sizes)),
                len(sizes),
            )

    def _reserved_keys(self) -> set[str]:
        """Returns the top-level keys that are not extras."""
        return set(_RESERVED) | set(self.checkpointables)

    def _join(self, name: str) -> str:
        """Returns the path of `name` inside save_dir."""
        return os.path.join(self.save_dir, name)


def read_any_checkpoint(path: str, path_manager: PathManager | None = None) -> Any:
    """Reads a checkpoint file (``.pth``, on any iopath path) or a sharded checkpoint folder
    (``.dcp``) onto the CPU, whole, as the file holds it.

    Raises:
        CheckpointError: missing, unreadable, unsafe or incomplete.
    """
    if is_sharded_checkpoint(path):
        return read_sharded(path)
    return read_checkpoint(path_manager or PathManager(), path)


def _rng_of_every_rank() -> dict[str, Any]:
    """Rank 0's RNG states, with every rank's under ``per_rank`` when there are several (a
    collective: every rank calls it)."""
    states = comm.all_gather(capture_rng_states())
    return {**states[0], "per_rank": states} if len(states) > 1 else states[0]


def _restore_rng(state: Any, path: str) -> bool:
    """Restores RNG states; a damaged RNG entry only costs exact reproducibility, so warn."""
    try:
        return restore_rng_states(state)
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
        logger.warning("RNG states in %s not restored (%s); random streams continue as is", path, e)
        return False


def _is_write_failure(error: RuntimeError) -> bool:
    """Whether torch's zip writer failed to write (a full disk, a file-size limit)."""
    text = str(error)
    return "PytorchStreamWriter" in text or "inline_container" in text or "file write" in text


def _first_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {first_line(error)[:200]}"


def _key_sample(report: CheckpointReport) -> str:
    unexpected = report.unexpected[:3]
    missing = report.missing[:3]
    return f"file keys such as {unexpected}, model keys such as {missing}"
