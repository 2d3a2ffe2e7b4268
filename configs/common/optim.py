"""Optimizers whose param groups come from a builder in PARAM_GROUP_BUILDERS.

`params.model` is bound at run time. Switch the grouping from the command line, e.g.
``optimizer.params.builder=layer_decay``; the base LR and weight decay are the optimizer's own
(``${..lr}``), so ``optimizer.lr=0.02`` reaches every group.
"""

import torch

from pgtrain.config import LazyCall as L
from pgtrain.param_groups import build_param_groups
from pgtrain.solver import MuonAdamW as _MuonAdamW

__config__ = True

SGD = L(torch.optim.SGD)(
    params=L(build_param_groups)(builder="default", lr="${..lr}", weight_decay="${..weight_decay}"),
    lr=0.02,
    momentum=0.9,
    weight_decay=1e-4,
)

AdamW = L(torch.optim.AdamW)(
    params=L(build_param_groups)(builder="default", lr="${..lr}", weight_decay="${..weight_decay}"),
    lr=1e-4,
    betas=(0.9, 0.999),
    weight_decay=0.1,
)

# Muon for hidden matrices and conv filters, AdamW for embeddings, output layers, the stem and
# 1-D parameters (the `muon` builder routes each and says why). With Moonlight's LR adjustment
# (match_rms_adamw) one LR suits both parts.
MuonAdamW = L(_MuonAdamW)(
    params=L(build_param_groups)(builder="muon", lr="${..lr}", weight_decay="${..weight_decay}"),
    lr=1e-3,
    weight_decay=0.1,
    momentum=0.95,
    adjust_lr_fn="match_rms_adamw",
    ns_dtype="auto",  # Newton-Schulz in bf16 where the device is fast at it, else fp32 (logged)
    betas=(0.9, 0.95),
)
