"""launch (single process, 2-process gloo spawn, torchrun) and create_ddp_model."""

import json
import os
import subprocess
import sys

import pytest
import torch.distributed as dist
from torch import nn
from torch.multiprocessing import ProcessRaisedException

from pgtrain.engine.processes.launch import launch
from pgtrain.engine.strategy.ddp import create_ddp_model
from pgtrain.errors import ConfigError, PgtrainError

HERE = os.path.dirname(os.path.abspath(__file__))
# Spawned processes import their function by module name; they inherit this sys.path.
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import _launch_targets  # noqa: E402

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


@pytest.fixture
def no_torchrun_env(monkeypatch):
    for name in TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_world_size_one_calls_main_in_this_process(no_torchrun_env):
    seen = []
    launch(lambda x: seen.append((x, dist.is_initialized())), 1, args=("arg",))
    assert seen == [("arg", False)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_gpus_per_machine": 0}, "num_gpus_per_machine must be >= 1"),
        ({"num_gpus_per_machine": 1, "num_machines": 0}, "num_machines must be >= 1"),
        ({"num_gpus_per_machine": 1, "num_machines": 2, "machine_rank": 2}, "machine_rank"),
        ({"num_gpus_per_machine": 2, "num_machines": 2}, "dist_url='auto' only works"),
        ({"num_gpus_per_machine": 2, "backend": "nccl"}, "backend 'nccl' needs one GPU"),
        ({"num_gpus_per_machine": 2, "backend": "carrier_pigeon"}, "not available"),
    ],
)
def test_bad_arguments_raise_before_spawning(no_torchrun_env, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        launch(_launch_targets.check_collectives, **kwargs)


def test_unpicklable_main_func_is_explained(no_torchrun_env):
    with pytest.raises(PgtrainError, match="define it at module level"):
        launch(lambda: None, 2, backend="gloo")


def test_torchrun_environment_overrides_spawn_arguments(monkeypatch):
    for name, value in zip(TORCHRUN_VARIABLES, ("0", "1", "0", "1"), strict=True):
        monkeypatch.setenv(name, value)
    seen = []
    # Without the environment these arguments would fail (nccl on a CPU machine).
    launch(lambda: seen.append(dist.is_initialized()), 2, backend="nccl")
    assert seen == [False]


def test_existing_process_group_calls_main_directly(no_torchrun_env, tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        seen = []
        # Without the group these arguments would fail (nccl on a CPU machine).
        launch(lambda: seen.append(dist.get_world_size()), 2, backend="nccl")
        assert seen == [1]
    finally:
        dist.destroy_process_group()


def test_create_ddp_model_is_identity_in_one_process():
    model = nn.Linear(2, 1)
    assert create_ddp_model(model, fp16_compression=True) is model


def _read_results(out_dir, world_size=2):
    results = []
    for rank in range(world_size):
        with open(os.path.join(out_dir, f"result{rank}.json")) as f:
            results.append(json.load(f))
    return results


def test_two_gloo_processes(no_torchrun_env, tmp_path, capfd, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # launch then splits the cores
    launch(_launch_targets.check_collectives, 2, args=(str(tmp_path),), backend="gloo")
    r0, r1 = _read_results(tmp_path)

    assert [(r["rank"], r["world_size"], r["is_main"]) for r in (r0, r1)] == [
        (0, 2, True),
        (1, 2, False),
    ]
    assert [(r["local_rank"], r["local_size"]) for r in (r0, r1)] == [(0, 2), (1, 2)]
    assert r0["num_threads"] == r1["num_threads"] == max(1, len(os.sched_getaffinity(0)) // 2)

    expected_gather = [{"rank": 0, "name": "r0"}, {"rank": 1, "name": "r1"}]
    assert r0["all_gather"] == r1["all_gather"] == expected_gather
    assert (r0["gather"], r1["gather"]) == ([], [0, 10])
    assert r0["mean"] == r1["mean"] == {"a": 0.5, "b": [0.5, 1.0]}
    assert r0["sum"] == {"a": 1.0, "b": [1.0, 2.0]}
    assert r0["barrier_saw_marker"]
    assert r0["shared_seed"] == r1["shared_seed"]

    # Per-rank seeds: ranks draw differently, and each rank's draws repeat (also in this process).
    assert r0["draws"] != r1["draws"]
    for rank, r in enumerate((r0, r1)):
        assert r["draws"] == r["draws_again"]
        assert r["draws"] == pytest.approx(
            _launch_targets.draw_random_numbers(_launch_targets.RUN_SEED + rank)
        )

    # DDP copies rank 0's weights and averages gradients of inputs 1 and 2: (1 + 2) / 2 = 1.5.
    assert r0["ddp"]["type"] == "DistributedDataParallel"
    assert r0["ddp"]["initial"] == r1["ddp"]["initial"]
    assert r0["ddp"]["grad"] == r1["ddp"]["grad"] == [1.5, 1.5]

    console = capfd.readouterr()
    assert "info from rank 0" in console.out
    assert "rank 1" not in console.out + console.err
    log0 = (tmp_path / "log.txt").read_text()
    log1 = (tmp_path / "log.txt.rank1").read_text()
    assert "info from rank 0" in log0 and "debug from rank 0" in log0 and "rank 1" not in log0
    assert "WARNING" in log1 and "debug from rank 1" in log1 and "rank 0" not in log1


def test_error_in_a_child_is_raised_with_its_message(no_torchrun_env, tmp_path):
    with pytest.raises(ProcessRaisedException, match="rank 1 failed on purpose"):
        launch(_launch_targets.fail_on_rank_1, 2, args=(str(tmp_path),), backend="gloo")
    assert not (tmp_path / "rank0_passed_barrier").exists()


def test_torchrun_runs_main_in_each_process(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_VARIABLES}
    env["OMP_NUM_THREADS"] = "1"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
               "2", os.path.join(HERE, "_torchrun_target.py"), str(tmp_path)]  # fmt: skip
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]

    records = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for rank, record in enumerate(records):
        assert record == {
            "rank": rank,
            "world_size": 2,
            "local_rank": rank,
            "local_size": 2,
            "backend": "gloo",
            "all_gather": [0, 10],
        }
        after = json.loads((tmp_path / f"after_launch{rank}.json").read_text())
        assert after == {"initialized": False}
    assert "ignoring launch(num_gpus_per_machine=1, num_machines=1)" in proc.stderr
