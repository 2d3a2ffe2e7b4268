"""torchvision's ``maskrcnn_resnet50_fpn_v2``, layer for layer, so its COCO checkpoint loads whole.

    python tools/train_net.py --config projects/maskrcnn/torchvision_r50_fpn_v2_config.py \\
        train.init_checkpoint=/path/to/maskrcnn_resnet50_fpn_v2_coco-73cbd019.pth

The v2 model ("Benchmarking Detection Transfer Learning with Vision Transformers") differs from
`torchvision_r50_fpn_config.py`, which this config starts from, as torchvision's v2 builder
makes it: ResNet-50 with (trainable) batch norm, conv1 and layer1 frozen, batch norm in the FPN, a
two-conv RPN head, a box head of four 256-channel convolutions with batch norm and one 1024 layer,
and batch norm in the four-conv mask head.
"""

from pgtrain.config import LazyCall as L
from pgtrain.modeling import build_head

from .torchvision_r50_fpn_config import dataloader, lr_scheduler, model, optimizer, shapes, train

__config__ = True

model.backbone.frozen_bn = False
model.backbone.norm_eps = None  # torchvision's 1e-5
model.backbone.fpn_norm = "batch_norm"
model.rpn_conv_depth = 2
model.box_head = L(build_head)(
    name="conv_fc_box_head",
    in_channels="${..backbone.fpn_channels}",
    conv_dims=[256, 256, 256, 256],
    fc_dims=[1024],
    norm="batch_norm",
)
model.mask_head.norm = "batch_norm"

train.output_dir = "./output/maskrcnn_torchvision_r50_fpn_v2"

__all__ = ["dataloader", "lr_scheduler", "model", "optimizer", "shapes", "train"]
