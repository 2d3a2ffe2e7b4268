"""Child process of test_atomic.py: saves a ~50 MB model over and over, reporting each save."""

import io
import sys
import time

import torch
from torch import nn

from pgtrain.checkpoint import Checkpointer

_torch_save = torch.save
PAUSE = 0.005  # seconds after each written MB


def _save_like_a_slow_disk(obj, f) -> None:
    """Writes the serialized checkpoint in 1 MB pieces like a slow disk, announcing the write.

    The parent kills this process during the write it announced: on a fast disk a save spends
    most of its time in fsync, where a kill would not test a half-written file.
    """
    buffer = io.BytesIO()
    _torch_save(obj, buffer)
    view = buffer.getbuffer()
    starts = range(0, len(view), 1 << 20)
    print(f"writing {len(starts) * PAUSE:.3f}", flush=True)  # a lower bound of the write time
    for start in starts:
        f.write(view[start : start + (1 << 20)])
        f.flush()
        time.sleep(PAUSE)


def main(save_dir: str) -> None:
    """Saves model_<i> with all weights equal to i; prints "saved <i> <seconds>" after each."""
    torch.set_num_threads(1)
    torch.save = _save_like_a_slow_disk
    model = nn.Linear(3600, 3600, bias=False)  # 13M floats, about 52 MB
    checkpointer = Checkpointer(model, save_dir, keep_last=2)
    with torch.no_grad():
        for i in range(1000):
            model.weight.fill_(float(i))
            start = time.perf_counter()
            checkpointer.save(f"model_{i:07d}", iteration=i)
            print(f"saved {i} {time.perf_counter() - start:.4f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
