"""LR schedules: an `LRMultiplier` over a schedule from LR_SCHEDULES, lengths as fractions.

Switch the schedule from the command line, e.g. ``lr_scheduler.schedule.name=cosine
~lr_scheduler.schedule.milestones ~lr_scheduler.schedule.gamma``. Milestones and warmup are
fractions of ``train.max_iter``, so a longer run moves them; to keep them where they are, give
them in iterations or epochs: ``lr_scheduler.schedule.unit=epoch
lr_scheduler.schedule.milestones=[8,11]`` (the run's epoch length comes from its dataset).
"""

from pgtrain.config import LazyCall as L
from pgtrain.solver import LRMultiplier, build_schedule

__config__ = True

multistep = L(LRMultiplier)(
    schedule=L(build_schedule)(
        name="multistep",
        milestones=[0.67, 0.89],
        gamma=0.1,
        warmup_length=0.01,
        warmup_factor=0.001,
        unit="fraction",  # or "iter" / "epoch": positions in iterations or epochs
        max_iter="${train.max_iter}",
        iters_per_epoch="${train.iters_per_epoch}",
    ),
    max_iter="${train.max_iter}",
)

cosine = L(LRMultiplier)(
    schedule=L(build_schedule)(
        name="cosine",
        warmup_length=0.05,
        warmup_factor=0.001,
        unit="fraction",  # or "iter" / "epoch": positions in iterations or epochs
        max_iter="${train.max_iter}",
        iters_per_epoch="${train.iters_per_epoch}",
    ),
    max_iter="${train.max_iter}",
)
