"""The main job: ImageNet-pretrained MobileNetV2-FPN Mask R-CNN on the built-in shapes data, CPU.

    python tools/train_net.py --config projects/maskrcnn/config.py          # what `make train` runs
    python tools/train_net.py --config projects/maskrcnn/config.py \\
        model.backbone.name=resnet50_fpn model.backbone.fpn_channels=256 train.device=cuda

The Mask R-CNN fine-tuning situation for real: a pretrained backbone, and everything the ImageNet
weights did not provide (FPN, RPN, box and mask heads and the new predictors) selected by a `fresh`
rule and trained at 10x the backbone's LR. The slim settings (FPN 128 on P3-P6, RPN 600/300, box
batch 64, small heads, RoIAlign sampling ratio 1, 256 px) make it affordable on 2 CPU cores.
"""

from configs.common.optim import SGD
from configs.common.schedules import multistep
from configs.common.train import train
from pgtrain.config import LazyCall as L
from pgtrain.data import (
    COCOInstanceDataset,
    build_detection_test_loader,
    build_detection_train_loader,
    build_train_transforms,
    shapes_path,
)
from pgtrain.evaluation import COCOEvaluator
from pgtrain.modeling import MaskRCNN, build_backbone, build_head

__config__ = True

model = L(MaskRCNN)(
    backbone=L(build_backbone)(
        name="mobilenet_v2_fpn", pretrained=True, fpn_channels=128, returned_layers=[2, 3, 4]
    ),
    num_classes=4,  # shapes set A: circle, square, triangle + background
    min_size=256,
    max_size=256,
    rpn_pre_nms_top_n_train=600,
    rpn_post_nms_top_n_train=300,
    rpn_pre_nms_top_n_test=600,
    rpn_post_nms_top_n_test=300,
    box_batch_size_per_image=64,
    box_detections_per_img=50,
    sampling_ratio=1,
    anchor_sizes=[32, 64, 128, 256],
    box_head=L(build_head)(
        name="two_mlp_box_head", in_channels="${..backbone.fpn_channels}", representation_size=256
    ),
    mask_head=L(build_head)(
        name="conv_mask_head", in_channels="${..backbone.fpn_channels}", num_convs=2, conv_dim=128
    ),
)

# The built-in data, generated on first use under root (None: $PGTRAIN_DATA/shapes or
# ~/.cache/pgtrain/shapes). For real COCO-format data, override the paths, e.g.
#   dataloader.train.dataset.json_file=/data/coco/annotations/instances_train2017.json
#   dataloader.train.dataset.image_root=/data/coco/train2017   model.num_classes=81
shapes = dict(set="A", root=None, num_train=600, num_val=100, image_size=256, seed=0)


def _shapes(split: str, kind: str):
    return L(shapes_path)(
        set="${shapes.set}",
        split=split,
        kind=kind,
        root="${shapes.root}",
        num_train="${shapes.num_train}",
        num_val="${shapes.num_val}",
        image_size="${shapes.image_size}",
        seed="${shapes.seed}",
    )


dataloader = dict(
    train=L(build_detection_train_loader)(
        dataset=L(COCOInstanceDataset)(
            json_file=_shapes("train", "json"),
            image_root=_shapes("train", "images"),
            transforms=L(build_train_transforms)(
                min_size=[224, 240, 256], max_size=256, flip_prob=0.5
            ),
            num_classes="${model.num_classes}",
            filter_empty=True,  # training skips images without objects; evaluation keeps them
        ),
        total_batch_size=4,
        seed="${train.seed}",
    ),
    test=L(build_detection_test_loader)(
        dataset=L(COCOInstanceDataset)(
            json_file=_shapes("val", "json"),
            image_root=_shapes("val", "images"),
            num_classes="${model.num_classes}",
            filter_empty=False,
        ),
        batch_size=4,
    ),
    evaluator=L(COCOEvaluator)(
        dataset_or_json="${..test.dataset.json_file}", output_dir="${train.output_dir}"
    ),
)

optimizer = SGD
optimizer.lr = 0.005
optimizer.weight_decay = 1e-4
optimizer.params.builder = "rules"
# New layers (not provided by the ImageNet weights) learn at 10x: the fine-tuning recipe's fix,
# found without string matching.
optimizer.params.rules = [dict(fresh=True, lr_mult=10.0, group="new")]

lr_scheduler = multistep
lr_scheduler.schedule.warmup_length = 0.05

train.output_dir = "./output/maskrcnn"
# 450 iterations, 3 epochs of the 600 training images at batch 4 (the log says so), so that
# `make train` on a fresh clone (virtualenv included) stays within 15 minutes on 2 cores at
# 0.95 s/iteration; train.max_iter=null train.epochs=N trains by epochs instead.
train.max_iter = 450
train.device = "auto"
train.checkpoint.period = 150  # an epoch
train.eval_period = 0  # at the end only
train.log_period = 20
train.clip_grad_norm = 10.0
