"""The LR range test's arithmetic: the factors swept, the smoothed loss, where it diverged, the
suggested base LR (with the rule that chose it) and which group blew up first.

One factor multiplies every group's configured LR at once, so layer decay, head multipliers
and group-specific LRs keep their ratios while the base LR sweeps (Lightning's ``lr_find`` sets
every group to one LR instead). The sweep itself is `pgtrain.engine.hooks.lr_sweep.LRSweepHook`.
"""

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pgtrain.errors import ConfigError

__all__ = ["RangeResult", "analyse_range", "diverged", "smoothed", "sweep_factors"]

DIVERGENCE = 4.0  # the smoothed loss this many times its minimum: the sweep has diverged
BETA = 0.98  # the loss's exponential moving average (bias-corrected), as fastai's finder
BLOWUP = 10.0  # a group's gradient norm this many times its early median: it blew up


def sweep_factors(start: float, end: float, steps: int) -> list[float]:
    """`steps` factors from `start` to `end`, evenly spaced on a log scale.

    Raises:
        ConfigError: not ``0 < start < end`` or fewer than 2 steps.
    """
    if not (0 < start < end) or not math.isfinite(end):
        raise ConfigError(f"the sweep must go up from a positive LR: got {start:g} -> {end:g}")
    if steps < 2:
        raise ConfigError(f"--iters {steps}: the sweep needs at least 2 iterations")
    ratio = math.log(end / start) / (steps - 1)
    return [start * math.exp(ratio * i) for i in range(steps)]


def smoothed(losses: Sequence[float], beta: float = BETA) -> list[float]:
    """The bias-corrected exponential moving average of `losses` (non-finite values end it)."""
    out, average = [], 0.0
    for i, loss in enumerate(losses):
        if not math.isfinite(loss):
            break
        average = beta * average + (1 - beta) * loss
        out.append(average / (1 - beta ** (i + 1)))
    return out


@dataclass
class RangeResult:
    """What the sweep found.

    Attributes:
        base_lrs: the base LR of every iteration run (the configured base x the factor).
        losses: the loss of every iteration; smooth: its moving average.
        diverged_at: the index where the smoothed loss passed DIVERGENCE x its minimum (or the
            loss stopped being finite); None when the sweep ended first.
        suggestion: the suggested base LR; rule: how it was chosen, in words.
        blew_up: ``(group, index)`` of the group whose gradient norm first passed BLOWUP x its
            early median; None when none did.
        steepest: the base lr where the smoothed loss fell fastest before its minimum (shown for
            comparison; None when it never fell).
    """

    base_lrs: list[float]
    losses: list[float]
    smooth: list[float]
    diverged_at: int | None
    suggestion: float | None
    rule: str
    blew_up: tuple[str, int] | None
    steepest: float | None = None


def diverged(smooth: Sequence[float], losses: Sequence[float]) -> bool:
    """Whether the sweep has diverged by its last iteration."""
    if len(smooth) < len(losses):
        return True  # a non-finite loss
    return len(smooth) > 1 and smooth[-1] > DIVERGENCE * min(smooth)


def analyse_range(
    base_lrs: Sequence[float],
    losses: Sequence[float],
    grad_norms: Mapping[str, Sequence[float]],
) -> RangeResult:
    """Finds the suggestion: a tenth of the base LR at the smoothed loss's minimum (before any
    divergence), the rule of thumb of the LR range test's author; the steepest descent of the
    smoothed loss before that minimum (skipping the first tenth, where the average warms up),
    for comparison; and which group's gradient norm blew up first."""
    smooth = smoothed(losses)
    end = len(smooth)
    diverged_at = next(
        (i for i in range(1, end) if smooth[i] > DIVERGENCE * min(smooth[: i + 1])), None
    )
    if end < len(losses) and diverged_at is None:
        diverged_at = end
    stop = diverged_at if diverged_at is not None else end
    lowest = min(range(stop), key=lambda i: smooth[i]) if stop else 0
    skip = max(1, stop // 10)
    slopes = [
        (smooth[i + 1] - smooth[i - 1]) / math.log(base_lrs[i + 1] / base_lrs[i - 1])
        for i in range(skip, min(lowest, stop - 1))
    ]
    steepest = None
    if slopes and min(slopes) < 0:
        steepest = base_lrs[skip + min(range(len(slopes)), key=slopes.__getitem__)]
    if stop:
        suggestion = base_lrs[lowest] / 10
        rule = (
            f"a tenth of the base lr at the smoothed loss's minimum ({base_lrs[lowest]:.3g})"
        )
    else:
        suggestion, rule = None, "no finite loss: no suggestion"
    blew_up = _first_blowup(grad_norms, stop)
    return RangeResult(
        list(base_lrs), list(losses), smooth, diverged_at, suggestion, rule, blew_up, steepest
    )


def _first_blowup(grad_norms: Mapping[str, Sequence[float]], stop: int) -> tuple[str, int] | None:
    """The group whose gradient norm first passed BLOWUP x its median over the first fifth."""
    first = None
    for group, ratios in grad_norms.items():
        early = sorted(r for r in ratios[: max(3, len(ratios) // 5)] if math.isfinite(r))
        if not early:
            continue
        median = early[len(early) // 2]
        for i, ratio in enumerate(ratios[: stop + 1]):
            if not math.isfinite(ratio) or (median > 0 and ratio > BLOWUP * median):
                if first is None or i < first[1]:
                    first = (group, i)
                break
    return first
