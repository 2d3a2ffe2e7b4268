"""torchvision's ``maskrcnn_resnet50_fpn``, layer for layer, so its COCO checkpoint loads whole.

    python tools/train_net.py --config projects/maskrcnn/torchvision_r50_fpn_config.py \\
        train.init_checkpoint=/path/to/maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth

The model is what torchvision's builder makes when it loads its COCO weights: ResNet-50 with
frozen batch norm (eps 0, as torchvision sets for these weights), conv1 and layer1 frozen
(``trainable_backbone_layers=3``), a 256-channel FPN without norm on C2-C5 plus a max-pooled
level, anchors 32-512 with three aspect ratios, a one-conv RPN head, the two-layer 1024 box head,
the four-conv mask head, 800 / 1333 px, torchvision's proposal and sampling numbers. Every tensor
of torchvision's checkpoint has its place; only the predictors differ when ``model.num_classes``
is not COCO's 91, and those are what the checkpointer reports fresh and the `fresh` rule trains
at 10x. Nothing downloads: ``pretrained`` stays False, the weights come from the checkpoint.

Data, optimizer, schedule and the rest of the run are the main job's (`config.py`); a torchvision
ResNet-50 Mask R-CNN is meant for a GPU (``train.device=auto`` picks one).
"""

from pgtrain.config import LazyCall as L
from pgtrain.modeling import MaskRCNN, build_backbone, build_head

from .config import dataloader, lr_scheduler, optimizer, shapes, train

__config__ = True

model = L(MaskRCNN)(
    backbone=L(build_backbone)(
        name="resnet50_fpn",
        pretrained=False,  # the checkpoint brings the weights; nothing downloads
        trainable_layers=3,
        returned_layers=[1, 2, 3, 4],
        fpn_channels=256,
        extra_pool=True,
        frozen_bn=True,
        norm_eps=0.0,
        fpn_norm=None,
    ),
    num_classes=4,  # shapes set A: circle, square, triangle + background (COCO: 91)
    min_size=800,
    max_size=1333,
    rpn_pre_nms_top_n_train=2000,
    rpn_pre_nms_top_n_test=1000,
    rpn_post_nms_top_n_train=2000,
    rpn_post_nms_top_n_test=1000,
    box_batch_size_per_image=512,
    box_detections_per_img=100,
    sampling_ratio=2,
    anchor_sizes=[32, 64, 128, 256, 512],
    rpn_conv_depth=1,
    box_head=L(build_head)(
        name="two_mlp_box_head", in_channels="${..backbone.fpn_channels}", representation_size=1024
    ),
    mask_head=L(build_head)(
        name="conv_mask_head",
        in_channels="${..backbone.fpn_channels}",
        num_convs=4,
        conv_dim=256,
        norm=None,
    ),
)

# The fine-tuning recipe's grouping (finetune_config.py): what the checkpoint did not provide,
# the new predictors, trains at 10x.
optimizer.params.rules = [dict(fresh=True, lr_mult=10.0, group="new")]

train.output_dir = "./output/maskrcnn_torchvision_r50_fpn"

__all__ = ["dataloader", "lr_scheduler", "model", "optimizer", "shapes", "train"]
