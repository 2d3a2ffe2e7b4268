"""The CUDA path, for the day a GPU is there: AMP steps, both projects, checkpoints across
devices, an NCCL launch. Marked `cuda`: without a GPU they are skipped (and counted as skipped).

`benchmarks/gpu_check.sh` runs them with the throughput benchmarks. ``PGTRAIN_GPU_TESTS_DEVICE=cpu``
runs the ones that make sense on a CPU there (a dry run of the tests themselves; fp16 with a
GradScaler and NCCL still need CUDA).
"""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from tests.projects.test_maskrcnn_project import TINY as MASKRCNN_TINY

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEVICE = os.environ.get("PGTRAIN_GPU_TESTS_DEVICE", "cuda")
TOY = "configs/quick/toy.py"

pytestmark = [pytest.mark.cuda, pytest.mark.slow]
needs_real_cuda = pytest.mark.skipif(DEVICE != "cuda", reason="needs CUDA itself (not a dry run)")


def train_net(*args, env=None):
    cmd = [sys.executable, os.path.join(ROOT, "tools", "train_net.py"), *args]
    env = {**os.environ, **(env or {})}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:] + proc.stdout[-4000:]
    return proc


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def losses(out):
    rows = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    return [r["total_loss"] for r in rows if "total_loss" in r]


def toy_args(out, *extra):
    return [
        "--config",
        TOY,
        f"train.output_dir={out}",
        f"train.device={DEVICE}",
        "train.eval_period=0",
        "train.log_period=5",
        *extra,
    ]


@pytest.mark.parametrize("precision", ["bf16", pytest.param("fp16", marks=needs_real_cuda)])
def test_amp_steps_train_and_checkpoint_the_scaler(tmp_path, precision):
    out = tmp_path / precision
    amp = ["train.amp.enabled=True", f"train.amp.precision={precision}"]
    train_net(*toy_args(out, "train.max_iter=40", *amp))
    seen = losses(out)
    assert len(seen) == 8 and all(torch.isfinite(torch.tensor(seen)))
    assert seen[-1] < seen[0]  # it learned, in mixed precision
    saved = torch.load(out / "model_final.pth", weights_only=True, map_location="cpu")
    assert ("grad_scaler" in saved["trainer"]) == (precision == "fp16")
    assert all(t.dtype == torch.float32 for t in saved["model"].values() if t.is_floating_point())


def test_a_mask_rcnn_step(tmp_path):
    out = tmp_path / "maskrcnn"
    train_net(
        "--config",
        "projects/maskrcnn/config.py",
        f"train.output_dir={out}",
        f"shapes.root={tmp_path / 'data'}",
        f"train.device={DEVICE}",
        *MASKRCNN_TINY,
        "train.max_iter=3",
        "train.eval_period=3",
        "train.log_period=1",
    )
    seen = losses(out)
    assert len(seen) == 3 and all(torch.isfinite(torch.tensor(seen)))
    rows = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    assert any("segm/AP" in r for r in rows)  # evaluation ran on the device too


def test_a_vit_step(tmp_path):
    out = tmp_path / "vit"
    train_net(
        "--config",
        "projects/vit/config.py",
        f"train.output_dir={out}",
        f"train.device={DEVICE}",
        "train.max_iter=4",
        "train.eval_period=4",
        "train.log_period=1",
    )
    seen = losses(out)
    assert len(seen) == 4 and all(torch.isfinite(torch.tensor(seen)))


def test_a_checkpoint_saved_on_the_device_loads_on_the_cpu_and_resumes_there(tmp_path):
    from pgtrain.checkpoint import Checkpointer
    from pgtrain.modeling import MLPClassifier

    out = tmp_path / "run"
    train_net(*toy_args(out, "train.max_iter=10", "train.checkpoint.period=5"))
    model = MLPClassifier(in_dim=16, hidden_dim=64, depth=2, num_classes=4)
    report = Checkpointer(model).resume_or_load(str(out / "model_final.pth"), resume=False)
    assert len(report.loaded) == len(model.state_dict()) and not report.fresh
    assert next(model.parameters()).device.type == "cpu"
    # ... and the run continues on the CPU from the device's checkpoint, then back on the device.
    proc = train_net(*toy_args(out, "train.max_iter=15", "--resume", "train.device=cpu"))
    assert "Starting training at iteration 11 of 15" in proc.stdout
    proc = train_net(*toy_args(out, "train.max_iter=20", "--resume"))
    assert "Starting training at iteration 16 of 20" in proc.stdout
    assert len(losses(out)) == 4


NCCL_STEP = """
import os, sys, torch, torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
sys.path.insert(0, os.getcwd())
from pgtrain.modeling import MLPClassifier
from pgtrain.utils import comm
dist.init_process_group("nccl", init_method="tcp://127.0.0.1:" + sys.argv[1], rank=0, world_size=1)
torch.cuda.set_device(0)
assert comm.get_world_size() == 1 and comm.all_gather(7) == [7]
losses = comm.reduce_dict({"loss": torch.tensor(2.0, device="cuda")})
assert losses["loss"].item() == 2.0
model = DistributedDataParallel(MLPClassifier(in_dim=8, hidden_dim=16, num_classes=3).cuda())
batch = {"features": torch.randn(4, 8), "label": torch.tensor([0, 1, 2, 0])}
loss = model(batch)["loss_cls"]
loss.backward()
assert all(p.grad is not None for p in model.parameters())
dist.destroy_process_group()
print("nccl ok")
"""


@needs_real_cuda
def test_a_one_process_nccl_group_runs_the_collectives_and_a_ddp_step():
    proc = subprocess.run(
        [sys.executable, "-c", NCCL_STEP, str(free_port())],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0 and "nccl ok" in proc.stdout, proc.stderr[-4000:]


@needs_real_cuda
def test_train_net_with_num_gpus_runs_on_the_gpu(tmp_path):
    out = tmp_path / "gpu"
    proc = train_net("--num-gpus", "1", *toy_args(out, "train.max_iter=10"))
    assert "Rank 0 of 1" in proc.stdout
    assert len(losses(out)) == 2


def test_fsdp_on_one_gpu_computes_in_bf16_and_saves_a_sharded_checkpoint(tmp_path):
    # torchrun's variables for one process: a process group of one, so FSDP shards (over one
    # rank) and its mixed precision applies, as `torchrun --nproc-per-node 1` would run it.
    from pgtrain.checkpoint.sharded import read_sharded

    one_rank = dict(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1")
    one_rank.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    out = tmp_path / "fsdp"
    proc = train_net(
        *(["--num-gpus", "1"] if DEVICE == "cuda" else []),
        "--config",
        "projects/vit/config.py",
        "model.backbone.depth=2",
        "train.strategy=fsdp",
        "train.fsdp.param_dtype=bf16",
        f"train.device={DEVICE}",
        f"train.output_dir={out}",
        "train.max_iter=6",
        "train.checkpoint.period=3",
        "train.eval_period=0",
        "train.log_period=3",
        env=one_rank,
    )
    assert "FSDP: 2 units (Block) and the root, over 1 processes" in proc.stdout
    seen = losses(out)
    assert len(seen) == 2 and all(torch.isfinite(torch.tensor(seen)))
    saved = read_sharded(str(out / "model_final.dcp"))  # on the CPU, without a process group
    weight = saved["model"]["backbone.blocks.0.attn.qkv.weight"]
    assert weight.device.type == "cpu" and weight.dtype == torch.float32  # bf16 only computes
    assert saved["trainer"]["iteration"] == 5
