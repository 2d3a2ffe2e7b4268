"""LR schedules: an `LRMultiplier` over a schedule from LR_SCHEDULES, lengths as fractions.

Switch the schedule from the command line, e.g. ``lr_scheduler.schedule.name=cosine``; milestones
and warmup are fractions of ``train.max_iter``, so overriding max_iter rescales them.
"""

from pgtrain.config import LazyCall as L
from pgtrain.solver import LRMultiplier, build_schedule

multistep = L(LRMultiplier)(
    schedule=L(build_schedule)(
        name="multistep",
        milestones=[0.67, 0.89],
        gamma=0.1,
        warmup_length=0.01,
        warmup_factor=0.001,
    ),
    max_iter="${train.max_iter}",
)

cosine = L(LRMultiplier)(
    schedule=L(build_schedule)(name="cosine", warmup_length=0.05, warmup_factor=0.001),
    max_iter="${train.max_iter}",
)
