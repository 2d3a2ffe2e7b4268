"""Optimizer step time with a ViT-B's layer-decay groups: AdamW foreach, fused, Muon, compiled.

    .venv/bin/python benchmarks/optimizer_step.py [--repeats 3] [--steps 5]
    .venv/bin/python benchmarks/optimizer_step.py --dim 64 --depth 2 --steps 2   # a smoke run

A ViT-B (STMixer's parameter names, 86 M parameters) with fixed gradients; its parameters in
one group, or in the ``layer_decay`` builder's groups (decay 0.75, weight decay 0.05; 28 groups).
Each setup's step time is divided by the step time of AdamW foreach with one group measured in
the same repeat; the median over the repeats is printed:

- AdamW foreach with the layer-decay groups: what the grouping itself costs (target <= 1.10),
- AdamW per tensor (``foreach=False``: the for-loop kernels, torch's default on a CPU),
- AdamW fused (``fused=True``, where the platform has it),
- Muon + AdamW (`pgtrain.solver.MuonAdamW`): the blocks' weight matrices routed to Muon by four
  rules on the same layer-decay groups (``optimizer="muon"``), the rest AdamW,
- AdamW compiled: ``train.compile.optimizer``'s `compile_optimizer_step` (one graph for all
  groups, LRs as tensors); it compiles once, before the repeats (the time is printed),
- SGD foreach with one group and with the groups (the grouping's cost for SGD: target <= 1.10).

The first step of every setup (which creates the optimizer state, and compiles) is not timed.
Nothing is asserted.
"""

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from param_groups import ViT, count_tensors

from pgtrain.engine.strategy.compile import compile_optimizer_step
from pgtrain.param_groups import build_param_groups
from pgtrain.solver import MuonAdamW

LR, WD = 1e-3, 0.05
MUON_RULES = [
    dict(match=f"blocks.*.{name}.weight", optimizer="muon")
    for name in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")
]


def step_seconds(optimizer: torch.optim.Optimizer, steps: int) -> float:
    """Seconds per step over `steps` steps, after one untimed step."""
    optimizer.step()
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.step()
    return (time.perf_counter() - start) / steps


def fused_adamw(groups: list[dict]) -> torch.optim.Optimizer | None:
    """AdamW with ``fused=True``, or None where this platform has no fused kernel."""
    try:
        return torch.optim.AdamW(groups, lr=LR, weight_decay=WD, fused=True)
    except RuntimeError:
        return None


def compiled_adamw(groups: list[dict]) -> tuple[torch.optim.Optimizer, float]:
    optimizer = torch.optim.AdamW(groups, lr=LR, weight_decay=WD)
    compile_optimizer_step(optimizer)
    start = time.perf_counter()
    optimizer.step()  # compiles
    return optimizer, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per setup and repeat")
    parser.add_argument("--depth", type=int, default=12, help="ViT depth; ViT-B: 12")
    parser.add_argument("--dim", type=int, default=768, help="ViT width; ViT-B: 768")
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled setup")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = ViT(depth=args.depth, dim=args.dim)
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    millions = sum(p.numel() for p in model.parameters()) / 1e6

    def layered(**options) -> list[dict]:
        return build_param_groups(
            model, builder="layer_decay", lr=LR, weight_decay=WD, decay=0.75, **options
        )

    groups = layered()
    print(
        f"ViT depth {args.depth} width {args.dim}: {millions:.1f} M parameters in "
        f"{count_tensors(model)} tensors, {len(groups)} layer-decay groups; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    setups: dict[str, Callable[[], torch.optim.Optimizer | None]] = {
        "AdamW foreach, 1 group": lambda: torch.optim.AdamW(
            model.parameters(), lr=LR, weight_decay=WD, foreach=True
        ),
        "AdamW foreach, groups": lambda: torch.optim.AdamW(
            layered(), lr=LR, weight_decay=WD, foreach=True
        ),
        "AdamW per tensor, groups": lambda: torch.optim.AdamW(
            layered(), lr=LR, weight_decay=WD, foreach=False
        ),
        "AdamW fused, groups": lambda: fused_adamw(layered()),
        "Muon + AdamW, groups": lambda: MuonAdamW(
            layered(rules=MUON_RULES), lr=LR, weight_decay=WD
        ),
        "SGD foreach, 1 group": lambda: torch.optim.SGD(
            model.parameters(), lr=LR, momentum=0.9, weight_decay=WD, foreach=True
        ),
        "SGD foreach, groups": lambda: torch.optim.SGD(
            layered(), lr=LR, momentum=0.9, weight_decay=WD, foreach=True
        ),
    }
    compiled = None
    if not args.no_compile:
        compiled, seconds = compiled_adamw(layered())
        print(
            f"AdamW compiled: the first step (compiling, {len(groups)} groups) took {seconds:.1f} s"
        )
    times: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        for name, make in setups.items():
            optimizer = make()
            if optimizer is not None:
                times.setdefault(name, []).append(step_seconds(optimizer, args.steps))
            del optimizer
        if compiled is not None:
            times.setdefault("AdamW compiled, groups", []).append(
                step_seconds(compiled, args.steps)
            )

    def median_ratio(name: str, over: str = "AdamW foreach, 1 group") -> float:
        """The median over the repeats of `name`'s step time over `over`'s in the same repeat."""
        return statistics.median(s / b for s, b in zip(times[name], times[over], strict=True))

    print(f"{'setup':26} {'ms / step':>10} {'/ AdamW foreach, 1 group':>26}")
    for name, seconds in times.items():
        print(f"{name:26} {statistics.median(seconds) * 1000:10.1f} {median_ratio(name):26.2f}")
    if "AdamW fused, groups" not in times:
        print("AdamW fused: not available on this platform")
    adamw = median_ratio("AdamW foreach, groups")
    sgd = median_ratio("SGD foreach, groups", over="SGD foreach, 1 group")
    print(
        f"the grouping's own cost (groups / 1 group): AdamW {adamw:.2f}, SGD {sgd:.2f}"
        "   target <= 1.10"
    )


if __name__ == "__main__":
    main()
