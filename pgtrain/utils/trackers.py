"""Experiment trackers beside TensorBoard: MLflow and Weights & Biases writers.

``train.trackers = ["mlflow"]`` (or ``["wandb"]``, or both) adds a writer that records what
TensorBoard gets, into a tracked run:

- every scalar of the event storage (losses, each group's LR under ``lr/<group name>``, the
  param-group statistics, the evaluation results such as ``bbox/AP``), stepped by iterations done
  as the console and TensorBoard count them;
- the resolved config: ``config.yaml`` as an artifact plus its keys flattened into params
  (MLflow), or the run's config (W&B);
- the param-group table logged at the start, as a text file (``param_groups.txt``);
- after each evaluation, a few validation images with the detector's predictions drawn
  (`PredictionImages`; TensorBoard gets them too).

Each tracker's package is imported only when the tracker is used (``pip install pgtrain[mlflow]``
or ``pgtrain[wandb]``). The run's tracked-run ids are kept in ``<output_dir>/trackers.json``: a
run resumed with ``--resume`` continues the same tracked run (MLflow: the same run id; W&B: the
same id with ``resume="must"``), from the resumed iteration on; a step the earlier session already
recorded (after its last checkpoint) is not recorded twice.

Nothing is sent anywhere by default: MLflow writes a local store under
``<output_dir>/mlruns`` (unless ``train.mlflow.tracking_uri`` or ``MLFLOW_TRACKING_URI`` names
another) and W&B runs offline (unless ``train.wandb.mode`` or ``WANDB_MODE`` says otherwise;
``wandb sync <output_dir>/wandb/offline-run-*`` uploads such a run later).
"""

import importlib.util
import json
import logging
import os
import posixpath
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from pgtrain.config.schema import section, setting
from pgtrain.errors import ConfigError, PgtrainError
from pgtrain.utils.events import EventStorage, get_event_storage
from pgtrain.utils.file_io import write_text_atomically
from pgtrain.utils.suggest import did_you_mean
from pgtrain.utils.writers import EventWriter, _SinceLastWrite

__all__ = [
    "TRACKERS",
    "MLflowWriter",
    "PredictionImages",
    "TrackerSettings",
    "WandbWriter",
    "build_trackers",
    "check_trackers",
    "project_name",
    "with_prediction_images",
]

logger = logging.getLogger(__name__)

# Tracker name -> (the package it imports, the pip extra that installs it).
TRACKERS = {"mlflow": ("mlflow", "mlflow"), "wandb": ("wandb", "wandb")}
STATE_FILE = "trackers.json"  # in the output folder: each tracker's run id and last step
IMAGE_TAG = "val/predictions"
MAX_IMAGES = 4


def _check_names(names: Any) -> str | None:
    choices = ", ".join(repr(n) for n in TRACKERS)
    if not isinstance(names, Sequence) or isinstance(names, str):
        return f"a list of tracker names from {choices}, e.g. [mlflow]"
    for name in names:
        if name not in TRACKERS:
            return f"a list of tracker names from {choices}{did_you_mean(str(name), TRACKERS)}"
    if len(set(names)) != len(names):
        return f"a list of tracker names from {choices}, each once"
    return None


@dataclass
class MLflowSettings:
    """``train.mlflow``: where the MLflow writer records."""

    tracking_uri: str = setting(
        "",
        "the MLflow tracking URI; '': the MLFLOW_TRACKING_URI environment variable, else a local "
        "store file:<output_dir>/mlruns",
    )
    experiment: str = setting(
        "", "the MLflow experiment; '': the config's project name (see docs/trackers.md)"
    )
    run_name: str = setting("", "the tracked run's name; '': the output folder's name")


@dataclass
class WandbSettings:
    """``train.wandb``: where the Weights & Biases writer records."""

    project: str = setting("", "the W&B project; '': the config's project name")
    entity: str = setting("", "the W&B entity (user or team); '': W&B's default")
    mode: Literal["auto", "offline", "online", "disabled"] = setting(
        "auto",
        "'auto': the WANDB_MODE environment variable, else offline (nothing is sent; "
        "`wandb sync` uploads later)",
    )
    dir: str = setting("", "the folder W&B writes its run files under; '': output_dir")
    run_name: str = setting("", "the tracked run's name; '': the output folder's name")


@dataclass
class TrackerSettings:
    """Experiment trackers beside TensorBoard: MLflow and Weights & Biases (docs/trackers.md)."""

    trackers: list[str] = setting(
        [],
        "experiment trackers that record the run beside TensorBoard: 'mlflow', 'wandb' "
        "(each needs its package: pip install pgtrain[mlflow] / pgtrain[wandb])",
        check=_check_names,
        expects="a list of tracker names from 'mlflow', 'wandb'",
    )
    prediction_images: int = setting(
        MAX_IMAGES,
        "after each evaluation, draw a detector's predictions on this many validation images "
        "for TensorBoard and the trackers; 0: none",
        ge=0,
        le=MAX_IMAGES,
    )
    mlflow: MLflowSettings = section(MLflowSettings, "the MLflow tracker")
    wandb: WandbSettings = section(WandbSettings, "the Weights & Biases tracker")


def check_trackers(train: Mapping[str, Any]) -> None:
    """Checks that the package of every tracker ``train.trackers`` names is installed (without
    importing it).

    Raises:
        ConfigError: one line naming the key and the pip extra that installs the package.
    """
    for name in train.get("trackers") or []:
        _require(name)


def _require(name: str) -> None:
    package, extra = TRACKERS[name]
    if importlib.util.find_spec(package) is None:
        raise ConfigError(
            f"train.trackers: '{name}' needs the {package} package, which is not installed; "
            f"pip install pgtrain[{extra}] (or remove '{name}' from train.trackers)"
        )


def project_name(cfg: Mapping[str, Any]) -> str:
    """The config's project name: the project whose code modules the config imports
    (``projects.maskrcnn.builders`` -> ``maskrcnn``, an outside ``myproj.builders`` -> ``myproj``),
    else ``pgtrain``."""
    imports = cfg.get("_imports_") or {}
    for module in imports.get("modules") or []:
        parts = str(module).split(".")
        if parts[0] == "projects" and len(parts) > 1:
            return parts[1]
        if parts[0]:
            return parts[0]
    return "pgtrain"


def build_trackers(
    train: Mapping[str, Any], *, max_iter: int, project: str, table: str = ""
) -> list[EventWriter]:
    """The writers ``train.trackers`` names (main process only: `default_writers` calls this).

    Args:
        train: the run's ``train`` section (checked: every key present).
        max_iter: the run's length; a tracked run that ends there is marked finished.
        project: the default experiment / project name (`project_name`).
        table: the param-group table logged at the start of the run.
    """
    output_dir = os.path.abspath(str(train["output_dir"]))
    writers: list[EventWriter] = []
    for name in train.get("trackers") or []:
        if name not in TRACKERS:  # `train` was not checked: say so as the check would
            raise ConfigError(f"train.trackers: {name!r} must be one of {', '.join(TRACKERS)}")
        _require(name)
        options = dict(train.get(name) or {})
        cls = MLflowWriter if name == "mlflow" else WandbWriter
        writers.append(cls(output_dir, max_iter, options, project=project, table=table))
    return writers


class _TrackerWriter(EventWriter):
    """What both trackers share: the scalars since the last write grouped by step, the steps
    already recorded by an earlier session skipped, the run id kept in ``trackers.json``."""

    name = ""

    def __init__(
        self,
        output_dir: str,
        max_iter: int,
        options: Mapping[str, Any] | None = None,
        *,
        project: str = "pgtrain",
        table: str = "",
        window: int = 20,
    ) -> None:
        self._output_dir = output_dir
        self._max_iter = max_iter
        self._options = dict(options or {})
        self._project = project
        self._table = table
        self._window = window
        self._since = _SinceLastWrite()
        self._last_step = 0
        self._images: dict[int, list[np.ndarray]] = {}
        self.run_id: str | None = None
        self.resumed = False

    # What each tracker does.
    def _open(self, run_id: str | None, start_iter: int) -> str:
        raise NotImplementedError

    def _log(self, step: int, scalars: dict[str, float], images: list[np.ndarray]) -> None:
        raise NotImplementedError

    def _finish(self, finished: bool) -> None:
        raise NotImplementedError

    def start(self, start_iter: int) -> None:
        state = _read_state(self._output_dir).get(self.name) or {}
        previous = state.get("run_id") if start_iter > 0 else None  # a new run: a new tracked run
        self.run_id = self._open(previous, start_iter)
        self.resumed = previous is not None and self.run_id == previous
        last = int(state.get("last_step", 0)) if self.resumed else 0
        self._last_step = max(start_iter, last)
        self._save_state()
        logger.info(
            "%s: %s tracked run %s", self.name, "resuming" if self.resumed else "new", self.run_id
        )

    def write(self, storage: EventStorage) -> None:
        if self.run_id is None:
            self.start(storage.iter)
        by_step: dict[int, dict[str, float]] = {}
        for name, (value, it) in self._since.new_items(storage, self._window).items():
            by_step.setdefault(it + 1, {})[name] = value  # iterations done, as the console
        for step in self._images:
            by_step.setdefault(step, {})
        for step in sorted(by_step):
            if step <= self._last_step:  # recorded by the session this one resumed
                continue
            self._log(step, by_step[step], self._images.get(step, []))
            self._last_step = step
        self._images.clear()
        self._save_state()

    def put_images(self, images: Sequence[np.ndarray], step: int) -> None:
        """Keeps `images` (H x W x 3 uint8) for the next `write`, at `step` (iterations done)."""
        self._images[step] = list(images)[:MAX_IMAGES]

    def close(self) -> None:
        if self.run_id is not None:
            self._finish(self._last_step >= self._max_iter)
            self.run_id = None

    def _save_state(self) -> None:
        state = _read_state(self._output_dir)
        state[self.name] = {"run_id": self.run_id, "last_step": self._last_step}
        try:
            write_text_atomically(
                os.path.join(self._output_dir, STATE_FILE), json.dumps(state, indent=2) + "\n"
            )
        except OSError as e:
            raise PgtrainError(
                f"could not write {os.path.join(self._output_dir, STATE_FILE)} "
                f"({e.strerror or e}); check that the output folder is writable"
            ) from e

    def _config_path(self) -> str | None:
        path = os.path.join(self._output_dir, "config.yaml")
        return path if os.path.isfile(path) else None

    def _config(self) -> dict[str, Any]:
        """The run's config (``config.yaml``) as plain values, interpolations resolved where
        they resolve in the file alone; {} without one."""
        from omegaconf import OmegaConf

        path = self._config_path()
        if path is None:
            return {}
        loaded = OmegaConf.load(path)
        try:
            plain = OmegaConf.to_container(loaded, resolve=True)
        except Exception:  # an interpolation that needs more than the file (e.g. an env var)
            plain = OmegaConf.to_container(loaded, resolve=False)
        return plain if isinstance(plain, dict) else {}

    def _run_name(self) -> str:
        return self._options.get("run_name") or os.path.basename(self._output_dir.rstrip("/"))

    def _resumed_suffix(self, start_iter: int) -> str:
        return f"_resumed_at_{start_iter}" if self.resumed else ""


def _read_state(output_dir: str) -> dict[str, Any]:
    path = os.path.join(output_dir, STATE_FILE)
    if not os.path.isfile(path):
        return {}
    try:
        with open(path) as f:
            state = json.load(f)
    except (OSError, ValueError) as e:
        logger.warning("%s is unreadable (%s): the trackers start new tracked runs", path, e)
        return {}
    return state if isinstance(state, dict) else {}


class MLflowWriter(_TrackerWriter):
    """Records the run into MLflow through `mlflow.tracking.MlflowClient` (no global active run).

    Metric names are the storage's (``lr/backbone``), except characters MLflow refuses in a
    name (anything but letters, digits, ``_ - . / : `` and spaces) become ``_``, and empty or
    ``.``/``..`` path segments are dropped (MLflow refuses names that are not plain paths).

    The default store, ``file:<output_dir>/mlruns``, is MLflow's file store; MLflow 3 accepts it
    only with ``MLFLOW_ALLOW_FILE_STORE=true``, which this writer sets for a ``file:`` store when
    it is not set. The file store keeps each metric in a file whose path is its name, so
    ``grad_norm`` (a file) and ``grad_norm/head`` (a file in a folder of the same name) cannot
    both be kept: in a file store ``/`` in a metric name becomes ``.`` (``lr.backbone``,
    ``grad_norm.head``). Other stores (a tracking server, ``sqlite:///...``) keep the names.

    The config's params are logged once: a resumed run adds the keys it did not have (MLflow
    refuses to change a param) and logs its config as ``config_resumed_at_<iter>.yaml`` beside
    the first ``config.yaml``.
    """

    name = "mlflow"
    file_store = False  # the store is MLflow's file store (set by `start`)

    def _open(self, run_id: str | None, start_iter: int) -> str:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        uri = (
            self._options.get("tracking_uri")
            or os.environ.get("MLFLOW_TRACKING_URI")
            or "file:" + os.path.join(self._output_dir, "mlruns")
        )
        self.file_store = uri.startswith("file:") or ":" not in uri  # a path is a file store
        if self.file_store:
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.tracking_uri = uri
        self._client = MlflowClient(tracking_uri=uri)
        if run_id is not None:
            try:
                self._client.get_run(run_id)
            except MlflowException as e:
                logger.warning(
                    "mlflow: cannot continue tracked run %s in %s (%s); starting a new one",
                    run_id,
                    uri,
                    str(e).splitlines()[0],
                )
            else:
                self._client.update_run(run_id, status="RUNNING")
                self.resumed = True
                self._record_start(run_id, start_iter)
                return run_id
        experiment = self._options.get("experiment") or self._project
        try:
            found = self._client.get_experiment_by_name(experiment)
            experiment_id = (
                found.experiment_id if found else self._client.create_experiment(experiment)
            )
            run = self._client.create_run(experiment_id, run_name=self._run_name())
        except MlflowException as e:
            raise ConfigError(
                f"train.mlflow: cannot create a run in experiment {experiment!r} at {uri} "
                f"({str(e).splitlines()[0]}); check train.mlflow.tracking_uri"
            ) from e
        self._record_start(run.info.run_id, start_iter)
        return run.info.run_id

    def _record_start(self, run_id: str, start_iter: int) -> None:
        suffix = self._resumed_suffix(start_iter)
        path = self._config_path()
        if path is not None:
            self._client.log_text(run_id, _read(path), f"config{suffix}.yaml")
            self._log_params(run_id)
        if self._table:
            self._client.log_text(run_id, self._table + "\n", f"param_groups{suffix}.txt")

    def _log_params(self, run_id: str) -> None:
        from mlflow.entities import Param
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

        params = {self.metric_name(k): v for k, v in _flat(self._config()).items()}
        params = {k: v[:MAX_PARAM_VAL_LENGTH] for k, v in params.items() if k and len(k) <= 250}
        if self.resumed:  # MLflow refuses a changed param: only the new keys
            have = self._client.get_run(run_id).data.params
            params = {k: v for k, v in params.items() if k not in have}
        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
            self._client.log_batch(run_id, params=items[i : i + MAX_PARAMS_TAGS_PER_BATCH])

    def _log(self, step: int, scalars: dict[str, float], images: list[np.ndarray]) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(self.metric_name(k), float(v), now, step) for k, v in scalars.items()]
        if metrics:
            self._client.log_batch(self.run_id, metrics=metrics)
        for i, image in enumerate(images):
            self._client.log_image(self.run_id, image, f"{IMAGE_TAG}/iter_{step:07d}_{i}.png")

    def metric_name(self, name: str) -> str:
        """The MLflow name of the storage's `name` (see the class docstring); params too."""
        key = _mlflow_key(name)
        return key.replace("/", ".") if self.file_store else key

    def _finish(self, finished: bool) -> None:
        self._client.set_terminated(self.run_id, "FINISHED" if finished else "KILLED")


class WandbWriter(_TrackerWriter):
    """Records the run into Weights & Biases (offline by default: files under
    ``<output_dir>/wandb/``, uploaded later by ``wandb sync``).

    Keys are the storage's names (``lr/backbone``: W&B shows ``lr`` as a section), unchanged.
    The config is the run's config (a resumed run updates it); the param-group table is
    ``param_groups.txt`` among the run's files; images are logged as ``val/predictions/<i>``.
    A resumed run is W&B's same run (``id=``, ``resume="must"``); offline, each session writes
    its own ``offline-run-*`` folder of that id, and ``wandb sync`` merges them.
    """

    name = "wandb"

    def _open(self, run_id: str | None, start_iter: int) -> str:
        import wandb

        mode = self._options.get("mode") or "auto"
        if mode == "auto":
            mode = os.environ.get("WANDB_MODE") or "offline"
        folder = self._options.get("dir") or self._output_dir
        os.makedirs(folder, exist_ok=True)
        self.resumed = run_id is not None
        settings = wandb.Settings(console="off", silent=True, disable_git=True, save_code=False)
        try:
            self._run = wandb.init(
                project=self._options.get("project") or self._project,
                entity=self._options.get("entity") or None,
                name=self._run_name(),
                dir=folder,
                mode=mode,
                id=run_id,
                resume="must" if run_id is not None else None,
                config=self._config(),
                settings=settings,
                reinit="create_new",
            )
        except Exception as e:  # wandb raises its own errors (e.g. a resumed id it does not know)
            raise ConfigError(
                f"train.wandb: could not start the W&B run ({type(e).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else ''}); check train.wandb.* and WANDB_*"
            ) from e
        if self.resumed:
            self._run.config.update(self._config(), allow_val_change=True)
        if self._table and mode != "disabled":  # a disabled run keeps no files
            name = f"param_groups{self._resumed_suffix(start_iter)}.txt"
            path = os.path.join(self._run.dir, name)
            with open(path, "w") as f:
                f.write(self._table + "\n")
            self._run.save(path, base_path=self._run.dir, policy="now")
        return self._run.id

    def _log(self, step: int, scalars: dict[str, float], images: list[np.ndarray]) -> None:
        import wandb

        data: dict[str, Any] = dict(scalars)
        for i, image in enumerate(images):  # one key each, as TensorBoard: sizes may differ
            data[f"{IMAGE_TAG}/{i}"] = wandb.Image(image)
        self._run.log(data, step=step)

    def _finish(self, finished: bool) -> None:
        self._run.finish(exit_code=0 if finished else 1)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _flat(node: Any, prefix: str = "") -> dict[str, str]:
    """``{"train.max_iter": "300", ...}``: the leaves of a config, as strings (lists as JSON)."""
    if isinstance(node, Mapping):
        out: dict[str, str] = {}
        for key, value in node.items():
            out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(node, list):
        return {prefix: json.dumps(node, default=str)}
    return {prefix: str(node)}


_MLFLOW_REFUSED = re.compile(r"[^/\w.\- :]")


def _mlflow_key(name: str) -> str:
    """`name` as MLflow accepts it: refused characters as ``_``, no empty or dot segments."""
    name = _MLFLOW_REFUSED.sub("_", name)
    parts = [p for p in name.split("/") if p not in ("", ".", "..")]
    return posixpath.join(*parts) if parts else "_"


class PredictionImages:
    """Draws a detector's predictions over the first `count` images of
    ``dataloader.test.dataset`` (`pgtrain.utils.visualization.draw_instances`).

    Only a dataset of ``(image, target)`` items with ``class_names`` and a model that returns
    one dict with ``boxes`` and ``labels`` per image (the detectors) are drawn; for any other
    (e.g. a classifier) this returns no images, said once at debug level. A model whose
    parameters are sharded (FSDP) is not drawn: its forward needs every process.
    """

    def __init__(
        self, cfg: Mapping[str, Any], model: Any, count: int, score_threshold: float = 0.5
    ) -> None:
        self._node = (cfg.get("dataloader") or {}).get("test", {}) or {}
        self._model = model
        self._count = min(int(count), MAX_IMAGES)
        self._threshold = score_threshold
        self._dataset: Any = None
        self._off = self._count <= 0

    def __call__(self) -> list[np.ndarray]:
        if self._off:
            return []
        import torch

        from pgtrain.utils import sharding
        from pgtrain.utils.visualization import draw_instances, prediction_to_cpu

        dataset = self._test_dataset()
        if dataset is None or any(map(sharding.is_sharded, self._model.parameters())):
            return self._stop("no test dataset with class_names, or a sharded model")
        items = [dataset[i] for i in range(min(self._count, len(dataset)))]
        if not items or not all(isinstance(it, tuple | list) and len(it) == 2 for it in items):
            return self._stop("test items are not (image, target) pairs")
        modes = {m: m.training for m in self._model.modules()}
        self._model.eval()
        try:
            with torch.no_grad():
                predictions = self._model(items)
        finally:
            for module, training in modes.items():
                module.train(training)
        if not _instance_predictions(predictions, len(items)):
            return self._stop("the model's outputs are not instance predictions")
        names = list(dataset.class_names)
        return [
            draw_instances(
                image, prediction_to_cpu(p), class_names=names, score_threshold=self._threshold
            )
            for (image, _), p in zip(items, predictions, strict=True)
        ]

    def _test_dataset(self) -> Any:
        if self._dataset is None:
            node = self._node.get("dataset") if isinstance(self._node, Mapping) else None
            if node is None:
                return None
            from pgtrain.config import instantiate

            self._dataset = instantiate(node, "dataloader.test.dataset")
        return self._dataset if hasattr(self._dataset, "class_names") else None

    def _stop(self, why: str) -> list[np.ndarray]:
        logger.debug("validation images are not drawn: %s", why)
        self._off = True
        return []


def _instance_predictions(predictions: Any, n: int) -> bool:
    return (
        isinstance(predictions, Sequence)
        and len(predictions) == n
        and all(isinstance(p, Mapping) and "boxes" in p and "labels" in p for p in predictions)
    )


def with_prediction_images(
    evaluate: Callable[[], Any], images: Callable[[], list[np.ndarray]], writers: Sequence[Any]
) -> Callable[[], Any]:
    """`evaluate`, followed (on the main process) by `images()` handed to every writer that
    takes images (``put_images(images, step)``, step: iterations done): each evaluation's
    validation images, drawn only when an evaluation ran."""
    targets = [w for w in writers if hasattr(w, "put_images")]

    def evaluate_and_draw() -> Any:
        results = evaluate()
        if targets:
            drawn = images()
            if drawn:
                step = get_event_storage().iter + 1
                for writer in targets:
                    writer.put_images(drawn, step)
        return results

    return evaluate_and_draw
