"""tools/train_net.py as a user runs it: a whole toy run, resume, and one-line errors."""

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from pgtrain.checkpoint import Checkpointer
from pgtrain.config import LazyCall as L
from pgtrain.config import LazyConfig, instantiate
from pgtrain.errors import ConfigError
from pgtrain.evaluation import ClassificationEvaluator
from tests._cli_batch import run_batch
from tests._loggers import loggers_restored

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOY = "configs/quick/toy.py"


def train_net(*args, cwd=ROOT):
    cmd = [sys.executable, os.path.join(ROOT, "tools", "train_net.py"), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600, env=env)


def one_line_error(proc):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("error: ")
    return lines[-1]


@pytest.mark.slow
def test_toy_run_writes_every_output_and_resumes(tmp_path):
    out = tmp_path / "run"
    common = [
        f"train.output_dir={out}",
        "train.checkpoint.period=20",
        "train.eval_period=20",
        "train.log_period=10",
    ]
    proc = train_net("--config", TOY, "train.max_iter=40", *common)
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = set(os.listdir(out))
    assert {
        "config.yaml",
        "log.txt",
        "metrics.json",
        "last_checkpoint",
        "model_0000020.pth",
        "model_final.pth",
    } <= files
    assert any(f.startswith("events.out.tfevents") for f in files)
    # config.yaml loads back to the run's config.
    saved = LazyConfig.load(str(out / "config.yaml"))
    assert saved.train.max_iter == 40 and saved.optimizer.params.rules[0].lr_mult == 10.0
    # Every group's LR, by name, at every writer period; evaluation results too.
    records = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    lr_records = [r for r in records if "lr/head" in r]
    assert len(lr_records) == 4
    for r in lr_records:
        assert r["lr/head"] == pytest.approx(10 * r["lr/default"])
    assert max(r.get("top1", 0) for r in records) > 60  # 4 classes: chance is 25
    log = (out / "log.txt").read_text()
    assert "lr default " in log and " head " in log and "eta" in log
    assert torch.load(out / "model_final.pth", weights_only=True)["iteration"] == 39
    # Resume continues from the saved iteration.
    proc = train_net("--config", TOY, "--resume", "train.max_iter=60", *common)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Starting training at iteration 41 of 60" in (out / "log.txt").read_text()
    assert torch.load(out / "model_final.pth", weights_only=True)["iteration"] == 59


@pytest.fixture(scope="module")
def error_runs(tmp_path_factory):
    """The one-line-error command lines below, run through train_net in one batch."""
    tmp = tmp_path_factory.mktemp("errors")
    cases = {
        "missing config": ["--config", str(tmp / "nope.py")],
        "unknown key": ["--config", TOY, "train.max_iters=3"],
        "unknown name": [
            "--config",
            TOY,
            f"train.output_dir={tmp / 'out'}",
            "lr_scheduler.schedule.name=cosin",
        ],
        "eval untrained": ["--config", TOY, "--eval-only", f"train.output_dir={tmp / 'new'}"],
        "eval no checkpoint": [
            "--config",
            TOY,
            "--eval-only",
            "--resume",
            f"train.output_dir={tmp / 'new'}",
        ],
    }
    results = run_batch("tools/train_net.py", list(cases.values()), tmp)
    return dict(zip(cases, results, strict=True))


def test_missing_config_file_is_one_line_error(error_runs):
    line = one_line_error(error_runs["missing config"])
    assert "config file not found" in line and "nope.py" in line


def test_unknown_override_key_is_one_line_error(error_runs):
    line = one_line_error(error_runs["unknown key"])
    assert "train has no key 'max_iters'; did you mean 'max_iter'?" in line


def test_unknown_registry_name_is_one_line_error(error_runs):
    line = one_line_error(error_runs["unknown name"])
    assert "lr_scheduler" in line and "No 'cosin' in LR_SCHEDULES; did you mean 'cosine'" in line


@pytest.mark.parametrize("case", ["eval untrained", "eval no checkpoint"])
def test_eval_only_without_trained_weights_is_one_line_error(error_runs, case):
    line = one_line_error(error_runs[case])
    assert "no trained weights" in line and "--resume" in line and "train.init_checkpoint=" in line
    assert "Evaluation:" not in error_runs[case].stderr


class _ResultsFileEvaluator(ClassificationEvaluator):
    """Writes its metrics to ``output_dir/results.json``, as the COCO evaluator writes its file."""

    def __init__(self, output_dir):
        super().__init__(topk=[1])
        self.output_dir = output_dir

    def evaluate(self):
        results = super().evaluate()
        os.makedirs(self.output_dir, exist_ok=True)
        with open(os.path.join(self.output_dir, "results.json"), "w") as f:
            json.dump(results, f)
        return results


def test_eval_only_never_overwrites_a_runs_results(tmp_path):
    with loggers_restored():  # train_net.main sets up logging on this test's streams
        _check_eval_only_folders(tmp_path)


def _check_eval_only_folders(tmp_path):
    from tools import train_net

    out, other = tmp_path / "run", tmp_path / "other"
    cfg = LazyConfig.load(os.path.join(ROOT, TOY))
    cfg.train.output_dir = str(out)
    cfg.dataloader.evaluator = L(_ResultsFileEvaluator)(output_dir="${train.output_dir}")
    torch.manual_seed(0)
    Checkpointer(instantiate(cfg.model), str(out)).save("model_final")
    (out / "results.json").write_text("the run's own")
    # The run's last checkpoint: results beside the run's, in eval_model_final/.
    results = train_net.main(cfg, SimpleNamespace(eval_only=True, resume=True))
    assert (out / "results.json").read_text() == "the run's own"
    assert json.loads((out / "eval_model_final" / "results.json").read_text()) == results
    # Again with the same weights: its own results are replaced, nothing else.
    assert train_net.main(cfg, SimpleNamespace(eval_only=True, resume=True)) == results
    # Another run's weights with the same file name would overwrite them: refused.
    Checkpointer(instantiate(cfg.model), str(other)).save("model_final")
    cfg.train.init_checkpoint = str(other / "model_final.pth")
    with pytest.raises(ConfigError, match="eval_model_final.*train.output_dir"):
        train_net.main(cfg, SimpleNamespace(eval_only=True, resume=False))
    assert json.loads((out / "eval_model_final" / "results.json").read_text()) == results
    # Pretrained weights under another name: their own folder.
    (other / "model_final.pth").rename(other / "pretrained.pth")
    cfg.train.init_checkpoint = str(other / "pretrained.pth")
    train_net.main(cfg, SimpleNamespace(eval_only=True, resume=False))
    assert (out / "eval_pretrained" / "results.json").exists()
    # Weights that fit only part of the model (another head): refused, nothing evaluated.
    cfg.model.num_classes = 3
    with pytest.raises(ConfigError, match=r"does not fit the model whole \(2 of its tensors"):
        train_net.main(cfg, SimpleNamespace(eval_only=True, resume=False))


@pytest.mark.slow
def test_resume_after_regrouping_restores_state_by_name(tmp_path):
    """Seed 001: trained with one LR for everything, resumed with the head at 10x."""
    out = tmp_path / "run"
    common = [f"train.output_dir={out}", "train.checkpoint.period=20", "train.eval_period=0"]
    proc = train_net("--config", TOY, "train.max_iter=20", "optimizer.params.rules=[]", *common)
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = torch.load(out / "model_final.pth", weights_only=True)["trainer"]["optimizer"]
    assert set(saved["groups"].values()) == {"default"}
    head_rule = "optimizer.params.rules=[{'match': 'head.*', 'lr_mult': 10.0, 'group': 'head'}]"
    proc = train_net("--config", TOY, "--resume", "train.max_iter=40", head_rule, *common)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (out / "log.txt").read_text()
    assert "Starting training at iteration 21 of 40" in log
    assert "restored 12, moved 2, added 0, dropped 0" in log
    assert "moved 'default' -> 'head': head.weight, head.bias" in log
    records = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    resumed = [r for r in records if r["iteration"] >= 20 and "lr/head" in r]
    assert resumed and all(r["lr/head"] == pytest.approx(10 * r["lr/default"]) for r in resumed)


@pytest.mark.slow
def test_a_project_outside_the_repo_trains_in_two_processes(tmp_path):
    """`--config /elsewhere/myproj/config.py`, no __init__.py, its own builder imported
    relatively and chosen by name: spawned processes import the project's code too."""
    project = tmp_path / "myproj"
    project.mkdir()
    (project / "builders.py").write_text(
        "from pgtrain.param_groups import PARAM_GROUP_BUILDERS\n\n\n"
        '@PARAM_GROUP_BUILDERS.register("outside_head_3x")\n'
        "def head_3x(model, *, lr, weight_decay=0.0):\n"
        '    head = [(n, p) for n, p in model.named_parameters() if n.startswith("head.")]\n'
        '    body = [(n, p) for n, p in model.named_parameters() if not n.startswith("head.")]\n'
        '    return [{"params": body}, {"params": head, "lr": 3 * lr, "name": "head"}]\n'
    )
    (project / "config.py").write_text(
        "from configs.quick.toy import *  # noqa: F403\n"
        "from configs.quick.toy import optimizer\n\n"
        "from . import builders  # noqa: F401  (registers outside_head_3x)\n\n"
        'optimizer.params.builder = "outside_head_3x"\n'
        "del optimizer.params.rules\n"
    )
    out = tmp_path / "run"
    proc = train_net(
        "--config", str(project / "config.py"), "--num-processes", "2",
        "train.max_iter=2", "train.eval_period=0", f"train.output_dir={out}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "param groups (builder 'outside_head_3x'" in proc.stdout + proc.stderr
    assert (out / "model_final.pth").exists()
