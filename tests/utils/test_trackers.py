"""MLflow and W&B writers (`pgtrain.utils.trackers`): a toy run and its resume read back from the
local stores; validation images with predictions; one-line errors for wrong settings."""

import importlib.util
import json
import os
import struct

import numpy as np
import pytest
import torch
from torch import nn

from pgtrain.config import LazyCall as L
from pgtrain.config import LazyConfig
from pgtrain.engine.run.settings import check_run_config
from pgtrain.errors import ConfigError
from pgtrain.utils import trackers
from pgtrain.utils.events import EventStorage, event_storage
from pgtrain.utils.trackers import (
    MLflowWriter,
    PredictionImages,
    WandbWriter,
    _mlflow_key,
    with_prediction_images,
)
from pgtrain.utils.writers import TensorboardWriter
from tests._loggers import loggers_restored
from tests._repo_configs import TOY, toy_run


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """Every tracker's files under tmp_path; nothing reaches the network."""
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_ALLOW_FILE_STORE"):  # unset, restored after
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb_home" / name.lower()))


def train(out, max_iter, resume, *overrides):
    from tools import train_net

    out.mkdir(exist_ok=True)
    with loggers_restored():
        cfg = toy_run(out, f"train.max_iter={max_iter}", *overrides)
        train_net.do_train(cfg, resume=resume)


def rewind_to(out, name):
    """Makes checkpoint `name` the last one, as if the run had stopped right after saving it
    (the trackers had recorded the later steps already)."""
    for f in os.listdir(out):
        if f.startswith("model_") and f != name:
            os.remove(out / f)
    (out / "last_checkpoint").write_text(name)


def state(out):
    return json.loads((out / "trackers.json").read_text())


# --- MLflow --------------------------------------------------------------------------------------


def test_mlflow_records_the_run_and_its_resume_into_one_run(tmp_path, offline):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    out = tmp_path / "run"
    # Clipping records grad_norm beside each group's grad_norm/<group>: a file and a folder of the
    # same name in MLflow's file store, unless the names are written lr.head, grad_norm.head.
    clip = "train.clip_grad_norm=10"
    train(out, 10, False, "train.trackers=[mlflow]", clip)
    run_id = state(out)["mlflow"]["run_id"]
    client = MlflowClient(f"file:{out / 'mlruns'}")

    def steps(key):
        return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]

    # Per-group LRs under their group names (the toy's head learns at 10x), the loss, the eval.
    assert steps("lr.head") == [(5, pytest.approx(0.05)), (10, pytest.approx(0.05))]
    assert steps("lr.default") == [(5, pytest.approx(0.005)), (10, pytest.approx(0.005))]
    assert [s for s, _ in steps("total_loss")] == [5, 10]
    assert [s for s, _ in steps("top1")] == [10]
    assert [s for s, _ in steps("grad_norm")] == [5, 10]
    assert {"grad_norm.head", "grad_norm.default"} <= set(client.get_run(run_id).data.metrics)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "pgtrain"  # the toy's project
    assert run.data.params["train.max_iter"] == "10"
    assert run.data.params["optimizer.lr"] == "0.005"
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.yaml", "param_groups.txt"} <= artifacts
    config = client.download_artifacts(run_id, "config.yaml", str(tmp_path / "dl"))
    assert LazyConfig.load(config).train.max_iter == 10
    table = open(client.download_artifacts(run_id, "param_groups.txt", str(tmp_path / "dl"))).read()
    assert "head" in table and "default" in table

    # Resumed to 20: the same tracked run, the later steps once each.
    train(out, 20, True, "train.trackers=[mlflow]", clip)
    assert state(out)["mlflow"]["run_id"] == run_id
    assert [s for s, _ in steps("total_loss")] == [5, 10, 15, 20]
    assert steps("lr.head")[-1] == (20, pytest.approx(0.005))  # after the milestone at 15
    assert [s for s, _ in steps("top1")] == [10, 20]
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"config_resumed_at_10.yaml", "param_groups_resumed_at_10.txt"} <= artifacts
    assert client.get_run(run_id).info.status == "FINISHED"
    assert len(client.search_runs([run.info.experiment_id])) == 1

    # Stopped after its checkpoint at 10 with steps 15 and 20 recorded: the resume repeats those
    # iterations, and the tracked run keeps each step once.
    rewind_to(out, "model_0000010.pth")
    train(out, 20, True, "train.trackers=[mlflow]", clip)
    assert state(out)["mlflow"] == {"run_id": run_id, "last_step": 20}
    assert [s for s, _ in steps("total_loss")] == [5, 10, 15, 20]
    assert [s for s, _ in steps("lr.default")] == [5, 10, 15, 20]


def test_a_new_run_in_the_folder_gets_a_new_tracked_run(tmp_path, offline):
    pytest.importorskip("mlflow")
    out = tmp_path / "run"
    train(out, 5, False, "train.trackers=[mlflow]", "train.mlflow.experiment=study")
    first = state(out)["mlflow"]["run_id"]
    train(out, 5, False, "train.trackers=[mlflow]")
    assert state(out)["mlflow"]["run_id"] != first


def test_a_tracked_run_that_is_gone_is_replaced_by_a_new_one(tmp_path, offline, caplog):
    pytest.importorskip("mlflow")
    gone = "0" * 32
    (tmp_path / "trackers.json").write_text(json.dumps({"mlflow": {"run_id": gone}}))
    writer = MLflowWriter(str(tmp_path), max_iter=20)
    writer.start(10)
    assert writer.run_id != gone and not writer.resumed
    assert f"cannot continue tracked run {gone}" in caplog.text
    assert state(tmp_path)["mlflow"] == {"run_id": writer.run_id, "last_step": 10}
    writer.close()


def test_mlflow_names_keep_their_groups_and_lose_only_refused_characters():
    assert _mlflow_key("lr/backbone.res2") == "lr/backbone.res2"
    assert _mlflow_key("lr/head (new)*") == "lr/head _new__"
    assert _mlflow_key("/a//b/../c") == "a/b/c"
    server, files = MLflowWriter("out", 1), MLflowWriter("out", 1)
    files.file_store = True
    assert server.metric_name("grad_norm/head*") == "grad_norm/head_"
    assert files.metric_name("grad_norm/head*") == "grad_norm.head_"


# --- W&B -----------------------------------------------------------------------------------------


def wandb_records(path):
    """The records of an offline ``run-<id>.wandb`` file (W&B's LevelDB-style log: a 7-byte
    header, then 32 KiB blocks of chunks, each with a 7-byte header: CRC, length, type)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, pending, block = 7, b"", 32768
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # the rest of a block too small for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a whole record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def wandb_runs(out):
    """``{folder: (run id, config, [history rows])}`` of every offline run under `out`."""
    runs = {}
    for folder in sorted((out / "wandb").glob("offline-run-*")):
        (log,) = folder.glob("run-*.wandb")
        run_id, config, rows = None, {}, []
        for record in wandb_records(log):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run_id = record.run.run_id
                config.update({u.key: json.loads(u.value_json) for u in record.run.config.update})
            elif kind == "config":
                config.update({u.key: json.loads(u.value_json) for u in record.config.update})
            elif kind == "history":
                items = record.history.item
                rows.append(
                    {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in items}
                )
        runs[folder] = (run_id, config, rows)
    return runs


def test_wandb_offline_records_the_run_and_its_resume_into_one_run(tmp_path, offline):
    pytest.importorskip("wandb")
    out = tmp_path / "run"
    train(out, 10, False, "train.trackers=[wandb]", "train.clip_grad_norm=10")
    run_id = state(out)["wandb"]["run_id"]
    ((folder, (logged_id, config, rows)),) = wandb_runs(out).items()
    assert logged_id == run_id
    assert config["train"]["max_iter"] == 10 and config["optimizer"]["lr"] == 0.005
    assert [r["_step"] for r in rows] == [5, 10]
    assert [r["lr/head"] for r in rows] == pytest.approx([0.05, 0.05])
    assert all("total_loss" in r for r in rows) and "top1" in rows[-1]
    assert {"grad_norm", "grad_norm/head", "grad_norm/default"} <= set(rows[-1])  # names kept
    assert "head" in (folder / "files" / "param_groups.txt").read_text()

    train(out, 20, True, "train.trackers=[wandb]")
    rewind_to(out, "model_0000010.pth")  # then stopped after 10 with 15 and 20 recorded
    train(out, 20, True, "train.trackers=[wandb]")
    runs = wandb_runs(out)
    assert len(runs) == 3 and {r[0] for r in runs.values()} == {run_id}  # one tracked run
    steps = [row["_step"] for _, _, rows in runs.values() for row in rows]
    assert steps == [5, 10, 15, 20]  # the later steps once each
    resumed = list(runs.values())[1]
    assert resumed[1]["train"]["max_iter"] == 20
    assert resumed[2][-1]["lr/head"] == pytest.approx(0.005)


# --- validation images ---------------------------------------------------------------------------


class Squares(torch.utils.data.Dataset):
    """Three grey 32 x 32 images, (image, target) pairs as the detection datasets give."""

    class_names = ("square",)

    def __len__(self):
        return 3

    def __getitem__(self, i):
        return torch.full((3, 32, 32), 0.5), {"boxes": torch.zeros(0, 4)}


class BoxEverywhere(nn.Module):
    """A 'detector' that predicts one square at (4, 4, 20, 20) in every image."""

    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, items):
        assert not self.training
        box = torch.tensor([[4.0, 4.0, 20.0, 20.0]])
        return [
            {"boxes": box, "labels": torch.tensor([1]), "scores": torch.tensor([0.9])}
            for _ in items
        ]


def test_predictions_are_drawn_after_an_evaluation_and_reach_every_writer(tmp_path, offline):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = {"dataloader": {"test": {"dataset": L(Squares)()}}}
    model = BoxEverywhere().train()
    images = PredictionImages(cfg, model, 4)
    tensorboard = TensorboardWriter(str(tmp_path / "tb"))
    mlflow = MLflowWriter(str(tmp_path / "ml"), max_iter=10)
    mlflow.start(0)
    evaluate = with_prediction_images(lambda: {"AP": 1.0}, images, [tensorboard, mlflow])
    storage = EventStorage(start_iter=9)
    with event_storage(storage):
        assert evaluate() == {"AP": 1.0}
        storage.put_scalar("bbox/AP", 1.0, smoothing_hint=False)
        mlflow.write(storage)
    assert model.training  # its mode is put back
    drawn = images()
    assert len(drawn) == 3 and drawn[0].shape == (32, 32, 3) and drawn[0].dtype == np.uint8
    assert (drawn[0][4, 4:20] != 128).all() and (drawn[0][25, 25] == 128).all()  # the box only

    tensorboard.close()
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0})
    events.Reload()
    assert sorted(events.Tags()["images"]) == ["val/predictions/0", "val/predictions/1",
                                                "val/predictions/2"]  # fmt: skip
    assert [e.step for e in events.Images("val/predictions/0")] == [10]

    client = MlflowClient(mlflow.tracking_uri)
    files = [a.path for a in client.list_artifacts(mlflow.run_id, "val/predictions")]
    assert files == [f"val/predictions/iter_0000010_{i}.png" for i in range(3)]
    assert [m.step for m in client.get_metric_history(mlflow.run_id, "bbox.AP")] == [10]
    mlflow.close()


def test_a_classifier_gets_no_images():
    cfg = LazyConfig.load(TOY)
    from pgtrain.config import instantiate

    assert PredictionImages(cfg, instantiate(cfg.model), 4)() == []
    assert PredictionImages({"dataloader": {"test": {"dataset": L(Squares)()}}}, nn.Linear(2, 2),
                            0)() == []  # fmt: skip


def test_wandb_writer_logs_images(tmp_path, offline):
    pytest.importorskip("wandb")
    writer = WandbWriter(str(tmp_path), max_iter=10)
    writer.start(0)
    writer.put_images([np.zeros((8, 8, 3), np.uint8), np.full((8, 8, 3), 255, np.uint8)], 10)
    storage = EventStorage(start_iter=9)
    storage.put_scalar("bbox/AP", 0.5, smoothing_hint=False)
    writer.write(storage)
    writer.close()
    (row,) = wandb_runs(tmp_path)[next(iter(wandb_runs(tmp_path)))][2]
    assert row["_step"] == 10 and row["bbox/AP"] == 0.5
    (files,) = (tmp_path / "wandb").glob("offline-run-*/files")
    for i in range(2):
        assert row[f"val/predictions/{i}/_type"] == "image-file"
        assert (files / row[f"val/predictions/{i}/path"]).is_file()
    assert "val/predictions/2/_type" not in row


# --- settings ------------------------------------------------------------------------------------


def checked(*overrides):
    cfg = LazyConfig.apply_overrides(LazyConfig.load(TOY), list(overrides))
    check_run_config(cfg)
    return cfg


@pytest.mark.parametrize(
    "override, words",
    [
        (
            "train.trackers=[mlfow]",
            ["train.trackers", "'mlflow', 'wandb'", "did you mean 'mlflow'"],
        ),
        ("train.trackers=mlflow", ["train.trackers", "a list of tracker names"]),
        ("train.trackers=[wandb,wandb]", ["train.trackers", "each once"]),
        ("train.wandb.mode=offlne", ["train.wandb.mode", "'offline'"]),
        ("train.prediction_images=9", ["train.prediction_images", "<= 4"]),
        ("+train.mlflow.uri=x", ["train.mlflow.uri", "unknown setting", "tracking_uri"]),
    ],
)
def test_wrong_settings_are_one_line_errors(override, words):
    with pytest.raises(ConfigError) as e:
        checked(override)
    message = str(e.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message


@pytest.mark.parametrize("name", ["mlflow", "wandb"])
def test_a_missing_package_names_its_pip_extra(name, monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        trackers.importlib.util, "find_spec", lambda p, *a: None if p == name else find_spec(p, *a)
    )
    with pytest.raises(ConfigError) as e:
        checked(f"train.trackers=[{name}]")
    assert str(e.value).startswith("train.trackers:") and "\n" not in str(e.value)
    assert f"pip install pgtrain[{name}]" in str(e.value)


def test_the_defaults_track_nothing():
    cfg = checked()
    assert cfg.train.trackers == [] and cfg.train.wandb.mode == "auto"
    assert trackers.build_trackers(cfg.train, max_iter=1, project="p") == []


def test_wandb_disabled_records_nothing(tmp_path, offline):
    pytest.importorskip("wandb")
    writer = WandbWriter(str(tmp_path), max_iter=10, options={"mode": "disabled"}, table="groups")
    writer.start(0)
    storage = EventStorage(start_iter=9)
    storage.put_scalar("total_loss", 0.5)
    writer.write(storage)
    writer.close()
    assert not (tmp_path / "wandb").exists()


def test_the_project_name_is_the_project_whose_code_the_config_imports():
    assert trackers.project_name({}) == "pgtrain"
    imports = {"root": "/r", "modules": ["projects.maskrcnn.builders"]}
    assert trackers.project_name({"_imports_": imports}) == "maskrcnn"
    assert trackers.project_name({"_imports_": {"modules": ["myproj.hooks"]}}) == "myproj"
