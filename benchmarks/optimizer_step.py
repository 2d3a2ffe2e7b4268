"""Optimizer step time with a ViT-B's layer-decay groups: AdamW foreach, fused, Muon, compiled.

    .venv/bin/python benchmarks/optimizer_step.py [--repeats 3] [--steps 5]
    .venv/bin/python benchmarks/optimizer_step.py --dim 64 --depth 2 --steps 2   # a smoke run

A ViT-B (STMixer's parameter names, 86 M parameters) with fixed gradients; its parameters in
one group, or in the ``layer_decay`` builder's groups (decay 0.75, weight decay 0.05; 28 groups).
Each setup's step time is divided by the step times of AdamW foreach with one group and with the
groups, measured right before it in the same repeat; the medians over the repeats are printed, a
row as soon as it is measured:

- AdamW foreach with the layer-decay groups: what the grouping itself costs (target <= 1.10),
- AdamW per tensor (``foreach=False``: the for-loop kernels, torch's default on a CPU),
- AdamW fused (``fused=True``, where the platform has it),
- Muon + AdamW (`pgtrain.solver.MuonAdamW`): the blocks' weight matrices routed to Muon by four
  rules on the same layer-decay groups (``optimizer="muon"``), the rest AdamW; with the
  Newton-Schulz dtype chosen for this machine (``ns_dtype="auto"``, printed), in bf16 and in fp32
  (its ratio to AdamW foreach with the groups is Muon's cost on this machine),
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
from pgtrain.solver.newton_schulz import fastest_dtype

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
        "Muon + AdamW, NS bf16": lambda: MuonAdamW(
            layered(rules=MUON_RULES), lr=LR, weight_decay=WD, ns_dtype="bf16"
        ),
        "Muon + AdamW, NS fp32": lambda: MuonAdamW(
            layered(rules=MUON_RULES), lr=LR, weight_decay=WD, ns_dtype="fp32"
        ),
        "SGD foreach, 1 group": lambda: torch.optim.SGD(
            model.parameters(), lr=LR, momentum=0.9, weight_decay=WD, foreach=True
        ),
        "SGD foreach, groups": lambda: torch.optim.SGD(
            layered(), lr=LR, momentum=0.9, weight_decay=WD, foreach=True
        ),
    }
    if not args.no_compile:
        compiled, seconds = compiled_adamw(layered())
        print(
            f"AdamW compiled: the first step (compiling, {len(groups)} groups) took {seconds:.1f} s"
        )
        setups["AdamW compiled, groups"] = lambda: compiled
    ns = fastest_dtype(next(model.parameters()).device)
    print(f"Muon's Newton-Schulz on this machine with ns_dtype='auto': {ns}")
    base, adamw_groups = "AdamW foreach, 1 group", "AdamW foreach, groups"
    print(f"{'setup':26} {'ms / step':>10} {'/ ' + base:>26} {'/ ' + adamw_groups:>24}")
    times: dict[str, list[float]] = {}
    # Each setup against the baseline measured right before it, in every repeat: a row is
    # printed as soon as it is measured, and drift in machine load cancels out of its ratios.
    for name, make in setups.items():
        ratios, against_groups = [], []
        for _ in range(args.repeats):
            reference = step_seconds(setups[base](), args.steps)
            grouped = step_seconds(setups[adamw_groups](), args.steps)
            optimizer = make()
            if optimizer is None:
                break
            seconds = step_seconds(optimizer, args.steps)
            times.setdefault(name, []).append(seconds)
            ratios.append(seconds / reference)
            against_groups.append(seconds / grouped)
            del optimizer
        if name not in times:
            print(f"{name:26} not available on this platform", flush=True)
            continue
        ms = statistics.median(times[name]) * 1000
        print(
            f"{name:26} {ms:10.1f} {statistics.median(ratios):26.2f} "
            f"{statistics.median(against_groups):24.2f}",
            flush=True,
        )
        if name == "AdamW foreach, groups":
            grouping = statistics.median(ratios)
        if name == "SGD foreach, 1 group":
            sgd_one = times[name]
        if name == "SGD foreach, groups":
            sgd = statistics.median(s / o for s, o in zip(times[name], sgd_one, strict=True))
    print(
        f"the grouping's own cost (groups / 1 group): AdamW {grouping:.2f}, SGD {sgd:.2f}"
        "   target <= 1.10"
    )

if __name__ == "__main__":
    main()
