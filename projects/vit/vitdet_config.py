"""ViTDet-style Mask R-CNN: a ViT with a simple feature pyramid, on the Mask R-CNN project's data.

    python tools/train_net.py --config projects/vit/vitdet_config.py train.max_iter=20
    python tools/inspect_param_groups.py --config projects/vit/vitdet_config.py

One param-group plan: layer decay (0.75) over the ViT at `backbone.net.` and the box and mask
predictors at 10x; a predictor is in the last layer (scale 1), so its LR is 10x the base, while
`backbone.net.blocks.0` runs at 0.75 ** depth of it. The ViT is small and starts from scratch, to
train on a CPU; for a real run use `model.backbone.embed_dim=768 depth=12 num_heads=12` and load
MAE weights into `backbone.net` (`pgtrain.modeling.load_vit_state_dict`).
"""

from pgtrain.config import LazyCall as L
from pgtrain.modeling import build_backbone
from projects.maskrcnn.config import dataloader, lr_scheduler, model, optimizer, shapes, train

__config__ = True

model.backbone = L(build_backbone)(
    name="vitdet_backbone",
    img_size="${shapes.image_size}",
    patch_size=16,
    embed_dim=192,
    depth=6,
    num_heads=3,
    drop_path_rate=0.1,
    out_channels=128,
    scale_factors=[2.0, 1.0, 0.5],  # strides 8, 16, 32, plus a pooled 64: four levels
)
model.box_head.in_channels = "${..backbone.out_channels}"
model.mask_head.in_channels = "${..backbone.out_channels}"

optimizer.params.builder = "layer_decay"
optimizer.params.decay = 0.75
optimizer.params.rules = [
    dict(regex=r"^roi_heads\.(box|mask)_predictor\.", lr_mult=10.0, group="predictors")
]

train.output_dir = "./output/vitdet"
train.max_iter = 200

__all__ = ["dataloader", "lr_scheduler", "model", "optimizer", "shapes", "train"]
