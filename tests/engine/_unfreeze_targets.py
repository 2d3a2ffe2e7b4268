"""Gradual unfreezing in two gloo processes (one launch): DDP runs that resume around a stage
boundary (the exact-resume workload), and a tiny ViT under FSDP2 that unfreezes its first
layers halfway, for tests/engine/test_unfreeze_distributed.py to compare with one process."""

import os

from tests.engine._exact_resume_targets import train_unbroken_and_resumed
from tests.engine._fsdp_targets import train, vit_config

# The ViT's first layers (patch embedding, block 0) wait for 2 of its 4 iterations.
VIT_STAGES = "train.unfreeze.stages=[{groups: [layer_0, layer_1], at: 2, warmup: 1}]"


def ddp_stage(at: int) -> str:
    return f"train.unfreeze.stages=[{{groups: [default], at: {at}, warmup: 2}}]"


def unfreeze_runs(root: str) -> None:
    """In each process: DDP resumes past a boundary (stage at 3) and across one (at 8, also
    compiled), then the FSDP ViT run."""
    for at in (3, 8):
        train_unbroken_and_resumed(os.path.join(root, f"ddp_at{at}"), False, ddp_stage(at))
    # DDP inside torch.compile's wrapper: wrapped anew inside the same compiled module.
    compiled = ["train.compile.model=true", "train.compile.backend=eager"]
    train_unbroken_and_resumed(os.path.join(root, "compiled"), False, ddp_stage(8), *compiled)
    train(vit_config(os.path.join(root, "fsdp"), "train.strategy=fsdp", VIT_STAGES), resume=False)
