"""Script for `torchrun`: calls `launch` and writes what each process saw to ``rank{RANK}.json``.

Usage: ``python -m torch.distributed.run --standalone --nproc_per_node 2 _torchrun_target.py DIR``
"""

import json
import os
import sys

import torch.distributed as dist

from pgtrain.engine.processes.launch import launch
from pgtrain.utils import comm


def main(out_dir: str) -> None:
    """Records rank, sizes, backend and an all_gather result."""
    record = {
        "rank": comm.get_rank(),
        "world_size": comm.get_world_size(),
        "local_rank": comm.get_local_rank(),
        "local_size": comm.get_local_size(),
        "backend": dist.get_backend(),
        "all_gather": comm.all_gather(comm.get_rank() * 10),
    }
    with open(os.path.join(out_dir, f"rank{record['rank']}.json"), "w") as f:
        json.dump(record, f)


if __name__ == "__main__":
    out = sys.argv[1]
    # The spawn arguments disagree with torchrun's 2 processes on purpose: launch must ignore them.
    launch(main, num_gpus_per_machine=1, args=(out,), backend="gloo")
    with open(os.path.join(out, f"after_launch{os.environ['RANK']}.json"), "w") as f:
        json.dump({"initialized": dist.is_initialized()}, f)
