"""The STMixer / VideoMAE v2 optimizer as a pgtrain config (inspection only).

    python tools/inspect_param_groups.py --config projects/vit/stmixer_config.py --verbose
    python tools/inspect_param_groups.py --config projects/vit/stmixer_config.py \\
        optimizer.params.decay=1.0     # the VMAEv2-ViTB config: no layer decay

STMixer builds its groups with `get_parameter_groups(model.backbone, ...)`: layer-wise LR decay
over the ViT backbone only (``scale = 0.75 ** (depth + 1 - layer_id)``: embeddings are layer 0,
``blocks.i`` layer i + 1), no weight decay for a bias, a 1-D parameter or a skip-list name
(`pos_embed`); then every parameter outside the backbone goes to one `rest` group at the
optimizer's own LR and weight decay (1e-4, biases and norms included). With decay 1.0 every
backbone layer is at scale 1, as in the VMAEv2-ViTB config.
"""

import torch

from pgtrain.config import LazyCall as L
from pgtrain.modeling import build_backbone
from pgtrain.param_groups import build_param_groups

from .stmixer import STMixerLike

__config__ = True

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

optimizer = L(torch.optim.AdamW)(
    params=L(build_param_groups)(
        builder="layer_decay",
        lr="${..lr}",
        weight_decay="${..weight_decay}",
        decay=0.75,  # cfg.ViT.LAYER_DECAY of the default config (1.0 in VMAEv2-ViTB's)
        prefix="backbone",  # layer ids for the backbone only
        skip=["pos_embed"],  # cfg.ViT.NO_WEIGHT_DECAY; a fixed sin-cos buffer here (a note)
        rules=[
            # Everything outside the backbone is one group at the optimizer's own LR and weight
            # decay, biases and norms included (the STMixer `rest_parameters` group).
            dict(
                id="rest",
                regex=r"^(?!backbone\.)",
                group="rest",
                weight_decay="${....weight_decay}",
            )
        ],
    ),
    lr=1e-4,
    weight_decay=1e-4,
)

train = dict(init_checkpoint="", device="cpu")
