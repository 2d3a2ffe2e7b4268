"""Seed 002's STMixer optimizer, expressed as pgtrain param-group rules (inspection only).

    python tools/inspect_param_groups.py --config projects/vit/stmixer_config.py --verbose
    python tools/inspect_param_groups.py --config projects/vit/stmixer_config.py --verbose \\
        optimizer.params.builder=layer_decay +optimizer.params.decay=0.75

The seed's rule: a bias, a 1-D parameter or a skip-list name (`pos_embed`) gets no weight decay;
names under `encoder.` get groups of their own: decay / no-decay x encoder / others. With layer
decay 1.0 (the VMAEv2-ViTB config) the backbone lands in the seed's two printed groups,
`decay_others` and `no_decay_others`; with the `layer_decay` builder the groups split per layer
with ``scale = 0.75 ** (depth + 1 - layer_id)``.
"""

import torch

from pgtrain.config import LazyCall as L
from pgtrain.modeling import build_backbone
from pgtrain.param_groups import build_param_groups

from .stmixer import STMixerLike

model = L(STMixerLike)(
    backbone=L(build_backbone)(
        name="vit_base",
        img_size=224,
        patch_size=16,
        num_frames=16,
        tubelet_size=2,
        use_cls_token=False,
        pos_embed="sincos",
    ),
    num_classes=80,
)

_NO_DECAY = dict(weight_decay=0.0)
optimizer = L(torch.optim.AdamW)(
    params=L(build_param_groups)(
        builder="rules",
        lr="${..lr}",
        weight_decay="${..weight_decay}",
        rules=[
            dict(match="*", group="decay_others"),
            dict(match="encoder.*", group="decay_encoder"),
            dict(bias=True, group="no_decay_others", **_NO_DECAY),
            dict(max_ndim=1, group="no_decay_others", **_NO_DECAY),
            # The seed's skip list; VideoMAE v2's pos_embed is a fixed buffer: may match nothing.
            dict(names=["pos_embed"], group="no_decay_others", optional=True, **_NO_DECAY),
            dict(match="encoder.*", bias=True, group="no_decay_encoder", **_NO_DECAY),
            dict(match="encoder.*", max_ndim=1, group="no_decay_encoder", **_NO_DECAY),
        ],
    ),
    lr=1e-4,
    weight_decay=1e-4,
)

train = dict(init_checkpoint="", device="cpu")
