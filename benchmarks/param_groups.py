"""Param groups: build + audit time of each built-in builder.

    .venv/bin/python benchmarks/param_groups.py [--repeats 5]

Build + audit time of each built-in builder for a synthetic model with 10,000 parameter tensors
and for ViT-L-sized names (24 blocks, width 1024), on the meta device (names and shapes only).
Target: under 0.2 s for 10,000 tensors. The step time of the groups these builders make is
`benchmarks/optimizer_step.py`'s (which uses this file's ViT).

Times are medians over the repeats; nothing is asserted.
"""

import argparse
import statistics
import time

import torch
from torch import nn

from pgtrain.param_groups import build_param_groups


class Block(nn.Module):
    """A ViT block with STMixer's parameter names."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.Module()
        self.attn.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.attn.q_bias = nn.Parameter(torch.zeros(dim))
        self.attn.v_bias = nn.Parameter(torch.zeros(dim))
        self.attn.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Module()
        self.mlp.fc1 = nn.Linear(dim, dim * 4)
        self.mlp.fc2 = nn.Linear(dim * 4, dim)


class ViT(nn.Module):
    """STMixer's names: patch_embed.proj, cls_token, pos_embed, blocks.N, norm, head."""

    def __init__(self, depth: int, dim: int, num_classes: int = 1000) -> None:
        super().__init__()
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, dim, kernel_size=16, stride=16)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 197, dim))
        self.blocks = nn.ModuleList(Block(dim) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "cls_token"}


def count_tensors(model: nn.Module) -> int:
    return sum(1 for _ in model.parameters())


BUILDERS = {
    "rules": {
        "rules": [{"module": "norm", "weight_decay": 0.0}, {"match": "head.*", "lr_mult": 10}]
    },
    "default": {"bias_lr_factor": 2.0},
    "layer_decay": {"decay": 0.75},
}


def time_builds(model: nn.Module, repeats: int) -> dict[str, tuple[float, int]]:
    """Returns the median build + audit seconds and the group count, per builder."""
    out = {}
    for builder, options in BUILDERS.items():
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            groups = build_param_groups(
                model, builder=builder, lr=1e-3, weight_decay=0.05, **options
            )
            times.append(time.perf_counter() - start)
        out[builder] = (statistics.median(times), len(groups))
    return out


def time_all_builders(repeats: int) -> None:
    with torch.device("meta"):
        models = {
            "10,000-tensor model (ViT names, 769 blocks)": ViT(depth=769, dim=8),
            "ViT-L names (24 blocks, width 1024)": ViT(depth=24, dim=1024),
        }
    for title, model in models.items():
        print(f"build + audit, {title}: {count_tensors(model):,} tensors")
        for builder, (seconds, groups) in time_builds(model, repeats).items():
            print(f"    {builder:12} {seconds * 1000:7.1f} ms  ({groups} groups)   target < 200 ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    time_all_builders(args.repeats)


if __name__ == "__main__":
    main()
