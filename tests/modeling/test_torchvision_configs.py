"""The torchvision Mask R-CNN configs ARE torchvision's models, so COCO checkpoints load whole.

The references are made by torchvision's own builders (``maskrcnn_resnet50_fpn``, ``..._v2``) with
their COCO weights selected, which is what freezes stages and picks the norm layers; the download
is replaced by a file of the same layout built from the pieces the builders call, so nothing is
fetched. Each config's model must match its reference key for key (names, shapes, dtypes,
buffers included), in what trains, in its layer types and norm settings, in the detector's
numbers (sizes, anchors, proposals, RoI pooling) and in what it computes.
"""

import copy
import os

import pytest
import torch
import torchvision.models._api as torchvision_weights_api
from torch import nn
from torchvision.models.detection import MaskRCNN as TorchvisionMaskRCNN
from torchvision.models.detection import (
    MaskRCNN_ResNet50_FPN_V2_Weights,
    MaskRCNN_ResNet50_FPN_Weights,
    maskrcnn_resnet50_fpn,
    maskrcnn_resnet50_fpn_v2,
)
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads
from torchvision.models.detection.rpn import RPNHead
from torchvision.models.resnet import resnet50
from torchvision.ops.misc import FrozenBatchNorm2d

from pgtrain.config import LazyConfig, instantiate
from pgtrain.engine import build_run
from pgtrain.errors import ConfigError
from pgtrain.modeling import MaskRCNN, build_backbone, build_head
from tests._repo_configs import ROOT
from tests.modeling.test_mask_rcnn import PREDICTOR_PARAMS as PREDICTORS

CONFIGS = {
    "v1": "projects/maskrcnn/torchvision_r50_fpn_config.py",
    "v2": "projects/maskrcnn/torchvision_r50_fpn_v2_config.py",
}
FINETUNE = "projects/maskrcnn/finetune_config.py"
NORMS = (nn.BatchNorm2d, FrozenBatchNorm2d, nn.GroupNorm, nn.LayerNorm)


def checkpoint_layout(version: str) -> TorchvisionMaskRCNN:
    """A randomly initialised model of the layout of torchvision's COCO checkpoint, from the
    pieces torchvision's builder calls (with weights=None the builder itself would switch to
    BatchNorm2d and train every layer)."""
    if version == "v1":
        backbone = _resnet_fpn_extractor(resnet50(norm_layer=FrozenBatchNorm2d), 3)
        return TorchvisionMaskRCNN(backbone, num_classes=91)
    backbone = _resnet_fpn_extractor(resnet50(), 3, norm_layer=nn.BatchNorm2d)
    sizes = ((32,), (64,), (128,), (256,), (512,))
    anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
    return TorchvisionMaskRCNN(
        backbone,
        num_classes=91,
        rpn_anchor_generator=anchors,
        rpn_head=RPNHead(256, anchors.num_anchors_per_location()[0], conv_depth=2),
        box_head=FastRCNNConvFCHead((256, 7, 7), [256] * 4, [1024], norm_layer=nn.BatchNorm2d),
        mask_head=MaskRCNNHeads(256, [256] * 4, 1, norm_layer=nn.BatchNorm2d),
    )


def torchvision_coco_model(version: str, monkeypatch) -> TorchvisionMaskRCNN:
    """torchvision's builder with its COCO weights selected, the download replaced by a file of
    `checkpoint_layout` (the builder loads it strictly, so the layout is checked too)."""
    torch.manual_seed(0)
    state = checkpoint_layout(version).state_dict()
    fetched = []

    def fake_download(url, *args, **kwargs):
        fetched.append(url)
        return state

    monkeypatch.setattr(torchvision_weights_api, "load_state_dict_from_url", fake_download)
    if version == "v1":
        model = maskrcnn_resnet50_fpn(weights=MaskRCNN_ResNet50_FPN_Weights.COCO_V1)
    else:
        model = maskrcnn_resnet50_fpn_v2(weights=MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1)
    assert len(fetched) == 1  # only the detector's weights (no ImageNet backbone on top)
    return model


def config_model(version: str, *overrides: str) -> nn.Module:
    cfg = LazyConfig.apply_overrides(
        LazyConfig.load(os.path.join(ROOT, CONFIGS[version])), overrides
    )
    return instantiate(cfg.model, "model")


def layer_types(model: nn.Module) -> dict[str, str]:
    """Type of every module holding parameters or buffers of its own, by name."""
    return {
        name: type(m).__name__
        for name, m in model.named_modules()
        if any(True for _ in m.parameters(recurse=False)) or any(True for _ in m.buffers(False))
    }


def norm_settings(model: nn.Module) -> dict[str, tuple]:
    """Type, eps and momentum of every norm layer, by name."""
    return {
        name: (type(m).__name__, m.eps, getattr(m, "momentum", None))
        for name, m in model.named_modules()
        if isinstance(m, NORMS)
    }


def detector_numbers(model: nn.Module) -> dict[str, object]:
    """The settings of a torchvision detector that hold no tensors."""
    t, rpn, roi = model.transform, model.rpn, model.roi_heads
    return {
        "min_size": tuple(t.min_size),
        "max_size": t.max_size,
        "image_mean": list(t.image_mean),
        "image_std": list(t.image_std),
        "anchor_sizes": rpn.anchor_generator.sizes,
        "aspect_ratios": rpn.anchor_generator.aspect_ratios,
        "rpn_pre_nms_top_n": dict(rpn._pre_nms_top_n),
        "rpn_post_nms_top_n": dict(rpn._post_nms_top_n),
        "rpn": (rpn.nms_thresh, rpn.score_thresh, rpn.min_size),
        "rpn_sampler": (
            rpn.fg_bg_sampler.batch_size_per_image,
            rpn.fg_bg_sampler.positive_fraction,
        ),
        "rpn_matcher": (rpn.proposal_matcher.high_threshold, rpn.proposal_matcher.low_threshold),
        "box_pool": (
            roi.box_roi_pool.featmap_names,
            roi.box_roi_pool.output_size,
            roi.box_roi_pool.sampling_ratio,
        ),
        "mask_pool": (
            roi.mask_roi_pool.featmap_names,
            roi.mask_roi_pool.output_size,
            roi.mask_roi_pool.sampling_ratio,
        ),
        "box_sampler": (
            roi.fg_bg_sampler.batch_size_per_image,
            roi.fg_bg_sampler.positive_fraction,
        ),
        "box_matcher": (roi.proposal_matcher.high_threshold, roi.proposal_matcher.low_threshold),
        "box_coder": roi.box_coder.weights,
        "box_test": (roi.score_thresh, roi.nms_thresh, roi.detections_per_img),
    }


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def version(request):
    return request.param


@pytest.fixture(scope="module")
def pair(version):
    """(the config's model with COCO's 91 classes, torchvision's COCO model)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        reference = torchvision_coco_model(version, monkeypatch)
    torch.manual_seed(1)
    return config_model(version, "model.num_classes=91"), reference


def test_state_dicts_are_key_for_key_torchvisions(pair):
    ours, theirs = (m.state_dict() for m in pair)
    assert list(ours) == list(theirs)
    for key, value in theirs.items():
        assert (ours[key].shape, ours[key].dtype) == (value.shape, value.dtype), key


def test_the_same_parameters_train(pair):
    ours, theirs = ({n: p.requires_grad for n, p in m.named_parameters()} for m in pair)
    assert ours == theirs
    frozen = {n for n, trains in ours.items() if not trains}
    assert frozen and all(
        n.startswith(("backbone.body.conv1.", "backbone.body.bn1.", "backbone.body.layer1."))
        for n in frozen
    )


def test_the_same_layers_and_norm_layers(pair, version):
    ours, theirs = pair
    assert layer_types(ours) == layer_types(theirs)
    norms = norm_settings(ours)
    assert norms == norm_settings(theirs)
    kinds = {kind for kind, _, _ in norms.values()}
    if version == "v1":  # frozen in the ResNet with eps 0 (set for the COCO weights), no others
        assert kinds == {"FrozenBatchNorm2d"}
        assert {eps for _, eps, _ in norms.values()} == {0.0}
    else:  # batch norm in the ResNet, the FPN, the box head and the mask head
        assert kinds == {"BatchNorm2d"}
        for part in (
            "backbone.body.",
            "backbone.fpn.",
            "roi_heads.box_head.",
            "roi_heads.mask_head.",
        ):
            assert any(name.startswith(part) for name in norms), part


def test_the_same_detector_numbers(pair):
    ours, theirs = (detector_numbers(m) for m in pair)
    assert ours == theirs
    assert ours["min_size"] == (800,) and ours["max_size"] == 1333
    assert ours["anchor_sizes"] == ((32,), (64,), (128,), (256,), (512,))
    assert ours["box_pool"][0] == ["0", "1", "2", "3"]  # plus the RPN's "pool" level


def test_the_same_predictions_from_the_same_weights(pair):
    ours, theirs = (copy.deepcopy(m) for m in pair)
    ours.load_state_dict(theirs.state_dict())
    for model in (ours, theirs):  # small and cheap: 64 px, few proposals, every detection kept
        model.eval()
        model.transform.min_size, model.transform.max_size = (64,), 64
        model.rpn._post_nms_top_n["testing"] = 50
        model.roi_heads.score_thresh, model.roi_heads.detections_per_img = 0.0, 5
    image = torch.rand(3, 64, 80, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        (mine,) = ours([image])  # pgtrain's MaskRCNN takes a batch of images in eval mode
        (reference,) = theirs([image])
    assert len(reference["boxes"]) == 5
    for key in ("boxes", "labels", "scores", "masks"):
        torch.testing.assert_close(mine[key], reference[key], msg=key)


def legacy_name(key: str) -> str:
    """The name torchvision's checkpoints from before its 0.13 layer renaming give the
    convolution `key` (torchvision renames them while loading); other keys keep theirs."""
    parts = key.split(".")
    if key.startswith("rpn.head.conv.0.0."):
        return f"rpn.head.conv.{parts[-1]}"
    if key.startswith(("backbone.fpn.inner_blocks.", "backbone.fpn.layer_blocks.")):
        return ".".join(parts[:4] + parts[-1:])
    if key.startswith("roi_heads.mask_head."):
        return f"roi_heads.mask_head.mask_fcn{int(parts[2]) + 1}.{parts[-1]}"
    return key


def fine_tuning_run(version: str, coco: dict, tmp_path, legacy_names: bool = False):
    """Saves `coco` (torchvision's 91-class state dict) as a bare state dict and builds the
    config's run from it with 5 classes, as tools/train_net.py does (weights, then groups)."""
    path = tmp_path / "maskrcnn_coco.pth"
    torch.save({legacy_name(k) if legacy_names else k: v for k, v in coco.items()}, path)
    cfg = LazyConfig.apply_overrides(
        LazyConfig.load(os.path.join(ROOT, CONFIGS[version])),
        [
            f"train.init_checkpoint={path}",
            "model.num_classes=5",
            f"train.output_dir={tmp_path / 'run'}",
            "train.device=cpu",
        ],
    )
    return cfg, build_run(cfg)


def check_loaded_whole_but_the_predictors(run, coco: dict) -> None:
    report = run.weights
    assert report.fresh == PREDICTORS
    assert [key for key, _, _ in report.shape_mismatched] == PREDICTORS
    assert report.missing == [] and report.unexpected == [] and report.excluded == []
    state = run.model.state_dict()
    assert set(state) == set(coco)
    # Counted as the model has them: keys torchvision renames while loading count too.
    assert sorted(report.loaded) == sorted(set(state) - set(PREDICTORS))
    for key, value in state.items():
        if key not in PREDICTORS:
            assert torch.equal(value, coco[key]), key  # loaded, buffers included
    assert "fresh: not in this file, start from their initialization (6)" in report.summary()


def test_a_coco_checkpoint_loads_whole_but_the_predictors_at_10x(version, pair, tmp_path):
    coco = pair[1].state_dict()
    cfg, run = fine_tuning_run(version, coco, tmp_path)
    check_loaded_whole_but_the_predictors(run, coco)
    # The fine-tuning recipe's rule (finetune_config.py) puts exactly the fresh tensors at 10x.
    finetune = LazyConfig.load(os.path.join(ROOT, FINETUNE))
    assert cfg.optimizer.params.rules == finetune.optimizer.params.rules
    assert cfg.optimizer.params.builder == finetune.optimizer.params.builder
    groups = {g["name"]: g for g in run.groups}
    assert sorted(groups) == ["default", "new"]
    assert groups["new"]["param_names"] == PREDICTORS
    assert groups["new"]["lr"] == pytest.approx(10 * groups["default"]["lr"])
    trainable = {n for n, p in run.model.named_parameters() if p.requires_grad}
    assert set(groups["default"]["param_names"]) == trainable - set(PREDICTORS)


def test_a_checkpoint_with_pre_0_13_key_names_loads_whole_too(tmp_path):
    torch.manual_seed(2)
    coco = checkpoint_layout("v1").state_dict()
    renamed = [k for k in coco if legacy_name(k) != k]
    assert len(renamed) == 2 + 2 * 8 + 2 * 4  # RPN conv, 8 FPN convs, 4 mask head convs
    _, run = fine_tuning_run("v1", coco, tmp_path, legacy_names=True)
    check_loaded_whole_but_the_predictors(run, coco)


# The options the configs use, on small models.


def test_fpn_norm_and_norm_eps_build_what_they_name():
    plain = build_backbone("resnet18_fpn", fpn_channels=8)
    assert not any(isinstance(m, NORMS) for m in plain.fpn.modules())
    normed = build_backbone("resnet18_fpn", fpn_channels=8, fpn_norm="batch_norm", norm_eps=0.0)
    fpn_norms = [m for m in normed.fpn.modules() if isinstance(m, NORMS)]
    assert len(fpn_norms) == 8 and all(type(m) is nn.BatchNorm2d for m in fpn_norms)
    assert all(m.bias is None for m in normed.fpn.modules() if isinstance(m, nn.Conv2d))
    trunk_norms = [m for m in normed.body.modules() if isinstance(m, NORMS)]
    assert trunk_norms and {m.eps for m in trunk_norms} == {0.0}
    assert {m.eps for m in plain.body.modules() if isinstance(m, NORMS)} == {1e-5}


def test_heads_with_norm_and_the_rpn_conv_depth():
    box = build_head("conv_fc_box_head", in_channels=8, conv_dims=[16, 16], fc_dims=[32])
    assert [n for n, _ in box.named_parameters()] == [
        "0.0.weight",
        "0.0.bias",
        "1.0.weight",
        "1.0.bias",
        "3.weight",
        "3.bias",
    ]
    assert box(torch.zeros(5, 8, 7, 7)).shape == (5, 32)
    normed = build_head("conv_fc_box_head", in_channels=8, conv_dims=[16], norm="batch_norm")
    assert type(normed[0][1]) is nn.BatchNorm2d and normed[0][0].bias is None
    mask = build_head("conv_mask_head", in_channels=8, num_convs=2, conv_dim=16, norm="batch_norm")
    assert [type(block[1]) for block in mask] == [nn.BatchNorm2d, nn.BatchNorm2d]
    backbone = build_backbone("mobilenet_v2_fpn", fpn_channels=16, returned_layers=[3, 4])
    box_head = build_head("conv_fc_box_head", in_channels=16, conv_dims=[16], fc_dims=[32])
    model = MaskRCNN(backbone=backbone, num_classes=3, rpn_conv_depth=2, box_head=box_head)
    assert len(model.rpn.head.conv) == 2
    assert model.roi_heads.box_predictor.cls_score.in_features == 32


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: build_backbone("resnet18_fpn", fpn_norm="bn"), r"resnet18_fpn: fpn_norm='bn'"),
        (lambda: build_backbone("resnet18_fpn", norm_eps=-1), r"resnet18_fpn: norm_eps=-1"),
        (lambda: build_head("conv_mask_head", in_channels=8, norm="gn"), "conv_mask_head: norm="),
        (lambda: build_head("conv_fc_box_head", in_channels=8, fc_dims=[]), "fc_dims=\\[\\]"),
        (lambda: build_head("conv_fc_box_head", in_channels=8, conv_dims=[0]), "conv_dims="),
        (
            lambda: MaskRCNN(
                backbone=build_backbone("resnet18_fpn"), num_classes=3, rpn_conv_depth=0
            ),
            r"model.rpn_conv_depth=0",
        ),
        (
            lambda: MaskRCNN(
                backbone=build_backbone("resnet18_fpn", fpn_channels=16),
                num_classes=3,
                box_head=build_head("conv_fc_box_head", in_channels=32),
            ),
            r"model.box_head has 32 input channels but receives 16",
        ),
    ],
)
def test_bad_options_name_the_option(build, message):
    with pytest.raises(ConfigError, match=message):
        build()
