"""The main job's Mask R-CNN with a timm backbone: ResNet-18 features and an FPN, on shapes.

    python tools/train_net.py --config projects/maskrcnn/timm_config.py
    python tools/train_net.py --config projects/maskrcnn/timm_config.py \\
        model.backbone.pretrained_file=/weights/resnet18.a1_in1k.safetensors
    python tools/train_net.py --config projects/maskrcnn/timm_config.py \\
        model.backbone.model_name=convnext_atto 'model.backbone.out_indices=[1,2,3]'

The body is ``timm.create_model(model_name, features_only=True, out_indices=[2, 3, 4])``
(strides 8, 16, 32; convnext_atto's levels are 0-3, so [1, 2, 3] there) and torchvision's
FeaturePyramidNetwork adds a max-pooled P6: four levels, one per anchor size of `config.py`.
Without a weights file everything trains from timm's initialization with batch norm updating.
With one (timm's format, fetched beforehand: nothing is downloaded) the batch norms are frozen,
the stem and stride-4 stage too, the body is recorded as pretrained, and the `fresh` rule of
`config.py` trains the FPN and the heads at 10x, as in the main job.
"""

import pgtrain.modeling.timm_backbones  # noqa: F401  (registers the "timm_fpn" backbone)
from pgtrain.config import LazyCall as L
from pgtrain.modeling import build_backbone

from .config import dataloader, lr_scheduler, model, optimizer, shapes, train

__config__ = True

model.backbone = L(build_backbone)(
    name="timm_fpn",
    model_name="resnet18",
    pretrained_file=None,  # a local timm weights file of the model, or None
    out_indices=[2, 3, 4],
    fpn_channels=128,
    extra_pool=True,
)

train.output_dir = "./output/maskrcnn_timm"

__all__ = ["dataloader", "lr_scheduler", "model", "optimizer", "shapes", "train"]
