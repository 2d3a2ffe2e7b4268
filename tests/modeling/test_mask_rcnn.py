"""MaskRCNN: torchvision's parameter names, losses, predictions, input handling and init weights."""

import pytest
import torch
from torchvision import tv_tensors

from pgtrain.checkpoint import Checkpointer
from pgtrain.errors import ConfigError
from pgtrain.modeling.backbones import build_backbone
from pgtrain.modeling.heads import build_head

LOSSES = {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"}
PREFIXES = (
    "backbone.body.",
    "backbone.fpn.",
    "rpn.head.",
    "roi_heads.box_head.",
    "roi_heads.box_predictor.",
    "roi_heads.mask_head.",
    "roi_heads.mask_predictor.",
)
PREDICTOR_PARAMS = [
    "roi_heads.box_predictor.cls_score.weight",
    "roi_heads.box_predictor.cls_score.bias",
    "roi_heads.box_predictor.bbox_pred.weight",
    "roi_heads.box_predictor.bbox_pred.bias",
    "roi_heads.mask_predictor.mask_fcn_logits.weight",
    "roi_heads.mask_predictor.mask_fcn_logits.bias",
]


def test_parameter_names_are_torchvisions(tiny_maskrcnn):
    names = [n for n, _ in tiny_maskrcnn().named_parameters()]
    assert all(n.startswith(PREFIXES) for n in names)
    assert {p for p in PREFIXES if any(n.startswith(p) for n in names)} == set(PREFIXES)
    assert set(PREDICTOR_PARAMS) <= set(names)


def test_training_returns_the_five_losses_and_backward_reaches_the_predictors(
    tiny_maskrcnn, tiny_batch
):
    model = tiny_maskrcnn().train()
    losses = model(tiny_batch)
    assert set(losses) == LOSSES
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    params = dict(model.named_parameters())
    for name in PREDICTOR_PARAMS + [
        "rpn.head.cls_logits.weight",
        "backbone.fpn.layer_blocks.0.0.weight",
    ]:
        assert params[name].grad is not None and params[name].grad.abs().sum() > 0, name


def test_eval_returns_predictions_in_the_given_image_coordinates(tiny_maskrcnn, tiny_batch):
    model = tiny_maskrcnn(box_detections_per_img=20).eval()
    with torch.no_grad():
        predictions = model(tiny_batch)
    assert len(predictions) == 2
    for (image, _), p in zip(tiny_batch, predictions, strict=True):
        h, w = image.shape[-2:]
        n = len(p["boxes"])
        assert 0 < n <= 20
        assert p["masks"].shape == (n, 1, h, w) and p["masks"].min() >= 0 and p["masks"].max() <= 1
        assert p["labels"].min() >= 1 and p["labels"].max() <= 3
        assert p["boxes"][:, 2].max() <= w and p["boxes"][:, 3].max() <= h
        assert p["scores"].shape == (n,)


def test_uint8_and_float_images_and_bare_images_give_the_same_predictions(
    tiny_maskrcnn, tiny_batch
):
    model = tiny_maskrcnn().eval()
    as_float = [(tv_tensors.Image(img.float() / 255), t) for img, t in tiny_batch]
    with torch.no_grad():
        a, b = model(tiny_batch), model(as_float)
        c = model([img for img, _ in tiny_batch])
    for x, y, z in zip(a, b, c, strict=True):
        torch.testing.assert_close(x["boxes"], y["boxes"])
        torch.testing.assert_close(x["boxes"], z["boxes"])


def test_xywh_boxes_are_converted_to_xyxy(tiny_maskrcnn, tiny_batch):
    model = tiny_maskrcnn().train()
    image, target = tiny_batch[0]
    xyxy = model._target_on(target, torch.device("cpu"), 0)["boxes"]
    xywh = target["boxes"].clone()
    xywh[:, 2:] -= xywh[:, :2]
    target = dict(target, boxes=tv_tensors.BoundingBoxes(xywh, format="XYWH", canvas_size=(64, 64)))
    converted = model._target_on(target, torch.device("cpu"), 0)["boxes"]
    assert type(converted) is torch.Tensor
    torch.testing.assert_close(converted, xyxy)


def test_device_and_num_classes(tiny_maskrcnn):
    model = tiny_maskrcnn(num_classes=3)
    assert model.device == torch.device("cpu") and model.num_classes == 3


def test_default_heads_follow_the_backbone_width():
    backbone = build_backbone("resnet18_fpn", fpn_channels=16, returned_layers=(3, 4))
    model = _model(backbone=backbone, num_classes=5)
    heads = model.roi_heads
    assert heads.box_head.fc6.in_features == 16 * 7 * 7
    assert heads.box_predictor.cls_score.out_features == 5
    assert heads.mask_predictor.conv5_mask.in_channels == 256
    assert heads.mask_predictor.mask_fcn_logits.out_channels == 5
    # One anchor size per pyramid level (P4, P5, pool): 32, 64, 128.
    assert model.rpn.anchor_generator.sizes == ((32,), (64,), (128,))
    assert model.roi_heads.box_roi_pool.featmap_names == ["0", "1"]


def test_default_predictors_follow_slim_heads():
    box_head = build_head("two_mlp_box_head", in_channels=8, representation_size=24)
    mask_head = build_head("conv_mask_head", in_channels=8, num_convs=2, conv_dim=12)
    heads = _model(box_head=box_head, mask_head=mask_head).roi_heads
    assert heads.box_predictor.cls_score.in_features == 24
    assert heads.mask_predictor.conv5_mask.in_channels == 12
    assert heads.mask_predictor.conv5_mask.out_channels == 12


def _model(**kwargs):
    from pgtrain.modeling.mask_rcnn import MaskRCNN

    kwargs.setdefault("backbone", build_backbone("mobilenet_v2_fpn", fpn_channels=8))
    kwargs.setdefault("num_classes", 3)
    return MaskRCNN(**kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_classes": 1}, "model.num_classes=1"),
        ({"box_head": build_head("two_mlp_box_head", in_channels=16)}, "model.box_head has 784"),
        (
            {"box_predictor": build_head("fast_rcnn_predictor", in_channels=1024, num_classes=4)},
            "model.box_predictor has 4 classes but receives 3",
        ),
        (
            {"mask_head": build_head("conv_mask_head", in_channels=16)},
            "model.mask_head has 16 input channels but receives 8",
        ),
        (
            {"mask_predictor": build_head("mask_rcnn_predictor", in_channels=64, num_classes=3)},
            "model.mask_predictor has 64 input channels but receives 256",
        ),
        ({"anchor_sizes": [32, 64]}, "model.anchor_sizes has 2 sizes"),
        ({"backbone": torch.nn.Linear(2, 2)}, "model.backbone"),
    ],
)
def test_parts_that_do_not_fit_are_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        _model(**kwargs)


def test_bad_batches_are_config_errors(tiny_maskrcnn, tiny_batch):
    model = tiny_maskrcnn().train()
    with pytest.raises(ConfigError, match="list of \\(image, target\\) pairs"):
        model(torch.zeros(2, 3, 64, 64))
    with pytest.raises(ConfigError, match="batch item 0 has no target"):
        model([tiny_batch[0][0]])
    image, target = tiny_batch[0]
    with pytest.raises(ConfigError, match="has no masks"):
        model([(image, {k: v for k, v in target.items() if k != "masks"})])
    with pytest.raises(ConfigError, match="outside 1..3; set model.num_classes"):
        model([(image, dict(target, labels=torch.tensor([1, 4])))])
    with pytest.raises(ConfigError, match="not a 3 x H x W RGB image"):
        model([(image[:1], target)])


def test_init_checkpoint_with_other_num_classes_reports_the_predictors_as_fresh(
    tmp_path, tiny_maskrcnn
):
    path = str(tmp_path / "torchvision_style.pth")
    torch.save(tiny_maskrcnn(num_classes=4, seed=0).state_dict(), path)
    model = tiny_maskrcnn(num_classes=3, seed=1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    report = Checkpointer(model).load(path)
    assert sorted(report.fresh) == sorted(PREDICTOR_PARAMS)
    assert sorted(k for k, _, _ in report.shape_mismatched) == sorted(PREDICTOR_PARAMS)
    saved = torch.load(path, weights_only=True)
    for name, param in model.named_parameters():
        if name in PREDICTOR_PARAMS:  # keeps its own initialization
            torch.testing.assert_close(param, before[name])
        else:
            torch.testing.assert_close(param, saved[name])


SLIM_CONFIG = """
from pgtrain.config import LazyCall as L
from pgtrain.modeling.backbones import build_backbone
from pgtrain.modeling.heads import build_head
from pgtrain.modeling.mask_rcnn import MaskRCNN

model = L(MaskRCNN)(
    backbone=L(build_backbone)(name="resnet18_fpn", fpn_channels=8, returned_layers=[3, 4]),
    num_classes=3,
    min_size=[64, 72],
    box_head=L(build_head)(
        name="two_mlp_box_head", in_channels="${..backbone.fpn_channels}", representation_size=16
    ),
    mask_head=L(build_head)(name="conv_mask_head", in_channels="${..backbone.fpn_channels}"),
)
"""


def test_slim_config_round_trips_and_instantiates(tmp_path):
    from pgtrain.config import LazyConfig, instantiate
    from pgtrain.modeling.mask_rcnn import MaskRCNN

    (tmp_path / "slim.py").write_text(SLIM_CONFIG)
    LazyConfig.save(LazyConfig.load(str(tmp_path / "slim.py")), str(tmp_path / "slim.yaml"))
    cfg = LazyConfig.apply_overrides(
        LazyConfig.load(str(tmp_path / "slim.yaml")), ["model.backbone.fpn_channels=16"]
    )
    built = instantiate(cfg.model)
    assert isinstance(built, MaskRCNN) and built.transform.min_size == (64, 72)
    assert built.backbone.out_channels == 16  # the override reaches the heads by interpolation
    assert built.roi_heads.box_head.fc6.in_features == 16 * 7 * 7
    assert built.roi_heads.box_predictor.cls_score.in_features == 16
