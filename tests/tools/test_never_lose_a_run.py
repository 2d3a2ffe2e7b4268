"""A run never loses what was saved: refused resumes and reuses, full disks, one-line errors.

Each case runs `tools/train_net.py` as a user does (a subprocess) on the toy config.
"""

import json
import os
import subprocess
import sys

import pytest
import torch
from PIL import Image

from tests._cli_batch import run_batch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOY = "configs/quick/toy.py"


def train_net(*args, shell_prefix=None):
    cmd = [sys.executable, os.path.join(ROOT, "tools", "train_net.py"), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if shell_prefix:  # e.g. a file-size limit for this process only
        cmd = ["bash", "-c", f'{shell_prefix}; exec "$@"', "bash", *cmd]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)


def one_line_error(proc):
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("error: "), proc.stderr[-2000:]
    return lines[-1]


def snapshot(folder):
    """Every file's bytes, by name relative to `folder`; the log, which every attempt appends
    to by design, aside."""
    out = {}
    for base, _, files in os.walk(folder):
        for name in files:
            if name.startswith("log.txt"):
                continue
            path = os.path.join(base, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = f.read()
    return out


def toy_run(out, *extra, iters=20):
    common = [f"train.output_dir={out}", "train.checkpoint.period=5", "train.eval_period=0"]
    proc = train_net("--config", TOY, f"train.max_iter={iters}", *common, *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 20-iteration toy run (checkpoints every 5, the last 3 kept)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    toy_run(out)
    return out


def copy_of(finished, tmp_path):
    import shutil

    target = tmp_path / "run"
    shutil.copytree(finished, target)
    return target


def test_resume_with_a_changed_model_is_refused_and_the_run_is_untouched(finished, tmp_path):
    # Observed: --resume with model.hidden_dim=32 loaded 1 tensor, trained on from iteration 20
    # with re-initialized weights, pruned its numbered checkpoints and overwrote model_final.pth.
    out = copy_of(finished, tmp_path)
    before = snapshot(out)
    proc = train_net(
        "--config",
        TOY,
        "--resume",
        f"train.output_dir={out}",
        "model.hidden_dim=32",
        "train.max_iter=30",
    )
    line = one_line_error(proc)
    assert (
        "does not fit the model (shape differs (11): stem.weight (64, 16) in file vs (32, 16)"
        in line
    )
    assert "train.init_checkpoint" in line
    assert snapshot(out) == before


def test_a_new_run_in_a_used_folder_is_refused(finished, tmp_path):
    # Observed: a run without --resume overwrote model_final.pth, moved last_checkpoint and
    # pruned the new run's own checkpoints while keeping the old run's.
    out = copy_of(finished, tmp_path)
    before = snapshot(out)
    line = one_line_error(train_net("--config", TOY, f"train.output_dir={out}", "train.max_iter=8"))
    assert line.startswith(f"error: train.output_dir={out} already holds a run (last_checkpoint, ")
    assert "--resume" in line and "train.overwrite=True" in line
    assert snapshot(out) == before


def test_overwrite_moves_the_old_run_aside_intact(finished, tmp_path):
    out = copy_of(finished, tmp_path)
    before = snapshot(out)
    toy_run(out, "train.overwrite=True", iters=8)
    archives = [n for n in os.listdir(out) if n.startswith("replaced_")]
    assert len(archives) == 1
    assert snapshot(out / archives[0]) == before
    assert sorted(n for n in os.listdir(out) if n.endswith(".pth")) == [
        "model_0000005.pth",
        "model_final.pth",
    ]


def test_an_initial_checkpoint_of_another_model_is_refused(tmp_path):
    # Observed: every key mismatched, "Loaded 0 model tensors", exit 0, trained from scratch.
    other = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(3, 3), "decoder.bias": torch.zeros(3)}, other)
    proc = train_net(
        "--config", TOY, f"train.output_dir={tmp_path / 'run'}", f"train.init_checkpoint={other}"
    )
    line = one_line_error(proc)
    assert f"Initial checkpoint {other} provides none of the model's 12 parameters" in line


def test_an_initial_checkpoint_that_provides_little_warns_loudly(tmp_path):
    from pgtrain.modeling import MLPClassifier

    state = {
        k: v
        for k, v in MLPClassifier(in_dim=16, hidden_dim=64, num_classes=4).state_dict().items()
        if k.startswith("head.")
    }
    partial = tmp_path / "head_only.pth"
    torch.save(state, partial)
    proc = toy_run(tmp_path / "run", f"train.init_checkpoint={partial}", iters=2)
    assert f"Initial checkpoint {partial} provides only 3% of the model's parameter values" in (
        proc.stdout + proc.stderr
    )


def test_a_full_disk_during_a_save_is_one_line_and_keeps_the_last_checkpoint(finished, tmp_path):
    # Observed: torch's zip writer raised RuntimeError (35 lines). `ulimit -f` makes the kernel
    # refuse the write the way a full disk does, so torch reports it as it really would.
    out = copy_of(finished, tmp_path)
    before = snapshot(out)
    line = one_line_error(
        train_net(
            "--config",
            TOY,
            "--resume",
            f"train.output_dir={out}",
            "train.max_iter=30",
            "train.checkpoint.period=5",
            "train.eval_period=0",
            shell_prefix="ulimit -f 64",
        )
    )
    assert line.startswith(f"error: Could not write checkpoint {out}/model_0000025.pth (")
    assert "the previous checkpoints are intact" in line
    after = snapshot(out)
    for name in (
        "last_checkpoint",
        "model_0000010.pth",
        "model_0000015.pth",
        "model_0000020.pth",
        "model_final.pth",
    ):
        assert after[name] == before[name], name
    assert not [n for n in after if n.endswith(".tmp")]


def test_a_failed_config_write_keeps_the_previous_config(finished, tmp_path):
    # Observed: config.yaml was written in place; a failed write truncated the previous copy.
    # The kernel refuses the write (a 1 KiB file-size limit; the config is larger).
    out = copy_of(finished, tmp_path)
    before = (out / "config.yaml").read_bytes()
    assert len(before) > 1024
    code = (
        "import sys; from pgtrain.config import LazyConfig; from pgtrain.engine import "
        "user_errors_exit\n"
        "with user_errors_exit(): LazyConfig.save(LazyConfig.load(sys.argv[1]), sys.argv[2])"
    )
    proc = subprocess.run(
        [
            "bash",
            "-c",
            'ulimit -f 1; exec "$@"',
            "bash",
            sys.executable,
            "-c",
            code,
            TOY,
            str(out / "config.yaml"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    line = one_line_error(proc)
    assert line == f"error: could not write {out}/config.yaml (File too large); check the folder"
    assert (out / "config.yaml").read_bytes() == before
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]


def test_metrics_hold_each_iteration_once_after_a_resume(finished, tmp_path):
    # Observed: after a kill and resume, metrics.json held the iterations between the
    # checkpoint and the kill twice. A resume after 15 iterations repeats 16..20 here.
    out = copy_of(finished, tmp_path)
    (out / "last_checkpoint").write_text("model_0000015.pth")
    toy_run(out, "--resume", "train.log_period=1")
    records = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    iterations = [r["iteration"] for r in records if "total_loss" in r]
    assert iterations == sorted(set(iterations)) and iterations[-1] == 20


def _bare_state_dict(tmp_path):
    from pgtrain.modeling import MLPClassifier

    out = tmp_path / "run"
    out.mkdir()
    torch.save(MLPClassifier(in_dim=16, hidden_dim=64, num_classes=4).state_dict(), out / "w.pth")
    (out / "last_checkpoint").write_text("w.pth")
    return out


def _nan_checkpoint(tmp_path):
    from pgtrain.modeling import MLPClassifier

    state = MLPClassifier(in_dim=16, hidden_dim=64, num_classes=4).state_dict()
    state["head.weight"][0, 0] = float("nan")
    torch.save(state, tmp_path / "nan.pth")
    return tmp_path / "nan.pth"


def _script(tmp_path):
    model = torch.jit.script(torch.nn.Linear(2, 2))
    model.save(str(tmp_path / "scripted.pt"))
    return tmp_path / "scripted.pt"


def _empty_annotations(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    path = tmp_path / "empty.json"
    categories = [{"id": i, "name": n} for i, n in enumerate(("circle", "square", "triangle"), 1)]
    image = {"id": 1, "file_name": "a.png", "height": 8, "width": 8}
    Image.new("RGB", (8, 8)).save(images / "a.png")  # present: the data set is empty
    path.write_text(json.dumps({"images": [image], "annotations": [], "categories": categories}))
    return [
        "--config",
        "projects/maskrcnn/config.py",
        f"dataloader.train.dataset.json_file={path}",
        f"dataloader.train.dataset.image_root={images}",
    ]


def _config(tmp_path, text):
    path = tmp_path / "bad_config.py"
    path.write_text(text)
    return path


def _pointer(tmp_path, content):
    out = tmp_path / "run"
    out.mkdir()
    (out / "last_checkpoint").write_bytes(content)
    return out


CASES = {
    "binary last_checkpoint": (
        lambda t: ["--resume", f"train.output_dir={_pointer(t, bytes(range(128, 160)))}"],
        "does not name a checkpoint",
    ),
    "empty last_checkpoint": (
        lambda t: ["--resume", f"train.output_dir={_pointer(t, b'')}"],
        "does not name a checkpoint",
    ),
    "last_checkpoint naming a bare state dict": (
        lambda t: ["--resume", f"train.output_dir={_bare_state_dict(t)}"],
        "holds weights but no training state, so --resume cannot continue from it",
    ),
    "output_dir under a file": (
        lambda t: [f"train.output_dir={_config(t, '')}/run"],
        "/run': cannot create folder",
    ),
    "empty output_dir": (lambda t: ["train.output_dir="], "train.output_dir is empty"),
    "a config that raises": (
        lambda t: ["--config", str(_config(t, "x = 1\nraise ValueError('boom')\n"))],
        "bad_config.py:2: ValueError: boom",
    ),
    "a config with a NameError": (
        lambda t: ["--config", str(_config(t, "model = undefined_name\n"))],
        "bad_config.py:1: NameError: name 'undefined_name' is not defined",
    ),
    "a lambda in a config": (
        lambda t: [
            "--config",
            str(_config(t, "from configs.quick.toy import *\nmodel.in_dim = lambda: 16\n")),
        ],
        "model.in_dim: <function <lambda>",
    ),
    "an empty annotations list": (
        _empty_annotations,
        "dataloader.train.dataset: the COCOInstanceDataset is empty (",
    ),
    "train.device=gpu": (lambda t: ["train.device=gpu"], "train.device: 'gpu' must be one of"),
    "train.seed=abc": (lambda t: ["train.seed=abc"], "train.seed: 'abc' must be a whole number"),
    "train.log_period=0": (
        lambda t: ["train.log_period=0"],
        "train.log_period: 0 must be a whole number >= 1",
    ),
    "train.eval_period=-1": (
        lambda t: ["train.eval_period=-1"],
        "train.eval_period: -1 must be a whole number of iterations >= 0",
    ),
    "optimizer.momentum=2": (
        lambda t: ["optimizer.momentum=2"],
        "optimizer.momentum=2 must be in [0, 1)",
    ),
    "a checkpoint with NaN weights": (
        lambda t: [f"train.init_checkpoint={_nan_checkpoint(t)}"],
        "'head.weight' holds NaN/Inf values; use an earlier checkpoint",
    ),
    "a TorchScript file": (
        lambda t: [f"train.init_checkpoint={_script(t)}"],
        "is a TorchScript program (torch.jit.save), not a checkpoint of weights",
    ),
}


@pytest.fixture(scope="module")
def bad_input_runs(tmp_path_factory):
    """Every case's command line, run through train_net in one batch (one import of torch)."""
    argvs = []
    for case, (make_args, _) in CASES.items():
        tmp_path = tmp_path_factory.mktemp(case.replace(" ", "_").replace("=", "_"))
        args = make_args(tmp_path)
        if "--config" not in args:
            args = ["--config", TOY, *args]
        if not any(a.startswith("train.output_dir") for a in args):
            args.append(f"train.output_dir={tmp_path / 'out'}")
        argvs.append([*args, "train.max_iter=2"])
    results = run_batch("tools/train_net.py", argvs, tmp_path_factory.mktemp("batch"))
    return dict(zip(CASES, results, strict=True))


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_naming_the_key_or_path(case, bad_input_runs):
    line = one_line_error(bad_input_runs[case])
    assert CASES[case][1] in line, line


def test_a_user_error_in_a_spawned_process_is_one_line(tmp_path):
    # The error is raised inside each of the two worker processes (the shard units are found
    # on the model) and travels back to the launcher as data, not as a traceback to be parsed.
    proc = train_net(
        "--config",
        TOY,
        "--num-processes",
        "2",
        f"train.output_dir={tmp_path / 'run'}",
        "train.strategy=fsdp",
        "train.fsdp.shard=[Blok]",  # found only when the model exists, in each worker
    )
    line = one_line_error(proc)
    assert line.startswith("error: train.fsdp.shard: 'Blok' matches no module class"), line
