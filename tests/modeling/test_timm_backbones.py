"""The timm BACKBONES entries: weights by name + local file, timm's layer decay, Mask R-CNN on
timm features, and one-line errors. Offline: every weights file is written here from a model."""

import sys

import pytest
import torch
from torchvision.ops.misc import FrozenBatchNorm2d

from pgtrain.checkpoint.model_state import pretrained_parameter_names
from pgtrain.errors import CheckpointError, ConfigError
from pgtrain.modeling import ImageClassifier, build_backbone
from pgtrain.modeling.timm_backbones import TimmFPNBackbone
from pgtrain.param_groups import build_param_groups

timm = pytest.importorskip("timm")
from timm.optim import param_groups_layer_decay  # noqa: E402

VIT = "vit_tiny_patch16_224"
VIT_SMALL = dict(img_size=32, patch_size=8, depth=3)  # 16 tokens, 3 blocks
TINY_CHANNELS = 32  # the FPN width the `tiny_maskrcnn` heads (conftest.py) take


def _save(model, path):
    """Writes `model`'s state_dict in timm's format (.pth or .safetensors)."""
    if str(path).endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    else:
        torch.save(model.state_dict(), path)
    return str(path)


def _one_line(error):
    message = str(error.value)
    assert "\n" not in message and message
    return message


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_classifier_backbone_loads_a_timm_file_by_name(tmp_path, suffix):
    torch.manual_seed(0)
    source = timm.create_model(VIT, num_classes=10, **VIT_SMALL)  # with a 10-class head
    path = _save(source, tmp_path / f"vit{suffix}")
    torch.manual_seed(1)  # another init: equality below comes from the file
    backbone = build_backbone("timm", model_name=VIT, pretrained_file=path, **VIT_SMALL)
    expected = {k: v for k, v in source.state_dict().items() if not k.startswith("head.")}
    got = backbone.state_dict()
    assert sorted(got) == sorted(expected)  # timm dropped the head: num_classes=0
    for key, value in expected.items():
        assert torch.equal(got[key], value), key
    names = {n for n, _ in backbone.named_parameters()}
    assert backbone.pretrained_parameter_names == names

    model = ImageClassifier(backbone=backbone, num_classes=4)
    assert model.feature_dim == 192
    assert pretrained_parameter_names(model) == {f"backbone.{n}" for n in names}
    fresh = {n for n, _ in model.named_parameters()} - pretrained_parameter_names(model)
    assert fresh == {"head.weight", "head.bias"}
    batch = {"image": torch.randn(2, 3, 32, 32), "label": torch.tensor([0, 3])}
    model.train()(batch)["loss_cls"].backward()
    assert backbone.blocks[0].attn.qkv.weight.grad is not None
    assert model.eval()(batch).shape == (2, 4)


def test_classifier_backbone_without_embed_dim_gets_its_feature_width():
    backbone = build_backbone("timm", model_name="resnet18", drop_path_rate=0.1)
    assert backbone.embed_dim == 512
    assert not hasattr(backbone, "pretrained_parameter_names")  # nothing loaded, nothing marked
    model = ImageClassifier(backbone=backbone, num_classes=3)
    with torch.no_grad():
        assert model.eval()({"image": torch.zeros(1, 3, 32, 32)}).shape == (1, 3)


def _per_parameter(groups, names_of):
    """{parameter name: (LR scale, weight decay)}; `names_of` maps id(parameter) to a name."""
    return {
        names_of(id(p)): (g["lr_scale"], g["weight_decay"]) for g in groups for p in g["params"]
    }


def _partition(groups, names_of):
    return sorted(sorted(names_of(id(p)) for p in g["params"]) for g in groups)


@pytest.mark.parametrize(
    "name, extra",
    [(VIT, VIT_SMALL), ("resnet18", {}), ("convnext_atto", {})],
    ids=["vit_tiny", "resnet18", "convnext_atto"],
)
def test_layer_decay_groups_equal_timms_for_the_classifier(name, extra):
    torch.manual_seed(0)
    model = ImageClassifier(
        backbone=build_backbone("timm", model_name=name, **extra), num_classes=4
    )
    reference = timm.create_model(name, num_classes=4, **extra)
    head = reference.pretrained_cfg["classifier"]  # "head", "fc" or "head.fc"

    def timm_name(ours):
        if ours.startswith("backbone."):
            return ours[len("backbone.") :]
        assert ours.startswith("head.")
        return f"{head}.{ours[len('head.') :]}"

    expected_groups = param_groups_layer_decay(
        reference,
        weight_decay=0.05,
        no_weight_decay_list=getattr(reference, "no_weight_decay", set)(),
        layer_decay=0.65,
    )
    timm_names = {id(p): n for n, p in reference.named_parameters()}
    expected = _per_parameter(expected_groups, timm_names.__getitem__)
    groups = build_param_groups(model, builder="layer_decay", lr=1.0, weight_decay=0.05, decay=0.65)
    our_names = {id(p): timm_name(n) for n, p in model.named_parameters()}
    got = _per_parameter(groups, our_names.__getitem__)
    assert sorted(got) == sorted(expected)
    for param, (scale, wd) in expected.items():
        assert got[param][0] == pytest.approx(scale, rel=1e-12), param
        assert got[param][1] == wd, param
    assert _partition(groups, our_names.__getitem__) == _partition(
        expected_groups, timm_names.__getitem__
    )
    assert "group_matcher of 'backbone'" in groups.record.notes[0]
    assert len({scale for scale, _ in expected.values()}) > 3  # the decay does something


@pytest.mark.parametrize("name", ["resnet18", "convnext_atto"])
def test_timm_fpn_trains_mask_rcnn_on_cpu(name, tiny_maskrcnn, tiny_batch):
    torch.manual_seed(0)
    backbone = build_backbone("timm_fpn", model_name=name, fpn_channels=TINY_CHANNELS)
    assert isinstance(backbone, TimmFPNBackbone) and backbone.out_channels == TINY_CHANNELS
    # Default levels: stride 4 and coarser (resnet18 1-4, convnext_atto 0-3), plus the pool.
    assert backbone.featmap_names == ["0", "1", "2", "3"] and backbone.num_levels == 5
    with torch.no_grad():
        features = backbone(torch.zeros(1, 3, 64, 64))
    assert {k: tuple(v.shape[-2:]) for k, v in features.items()} == {
        "0": (16, 16),
        "1": (8, 8),
        "2": (4, 4),
        "3": (2, 2),
        "pool": (1, 1),
    }
    model = tiny_maskrcnn(backbone=backbone, anchor_sizes=[16, 32, 64, 128, 256])
    assert model.roi_heads.box_roi_pool.featmap_names == backbone.featmap_names
    assert model.roi_heads.mask_roi_pool.featmap_names == backbone.featmap_names
    losses = model.train()(tiny_batch)
    assert set(losses) == {
        "loss_classifier",
        "loss_box_reg",
        "loss_mask",
        "loss_objectness",
        "loss_rpn_box_reg",
    }
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    body = [p for n, p in backbone.named_parameters() if n.startswith("body.")]
    assert body and all(p.requires_grad and p.grad is not None for p in body)
    assert all(p.grad is not None for p in backbone.fpn.parameters())
    with torch.no_grad():
        predictions = model.eval()(tiny_batch)
    assert len(predictions) == 2 and set(predictions[0]) == {"boxes", "labels", "scores", "masks"}


def test_timm_fpn_pretrained_marks_the_body_freezes_bn_and_low_levels(tmp_path, tiny_maskrcnn):
    torch.manual_seed(0)
    source = timm.create_model("resnet18")  # with its 1000-class fc, as timm's files are
    with torch.no_grad():  # statistics a fresh model would not have
        source.bn1.running_mean.uniform_(-1, 1)
    path = _save(source, tmp_path / "resnet18.safetensors")
    torch.manual_seed(1)
    backbone = build_backbone(
        "timm_fpn", model_name="resnet18", pretrained_file=path, out_indices=[2, 3, 4]
    )
    body = backbone.body
    assert isinstance(body.bn1, FrozenBatchNorm2d)  # frozen by default with weights
    assert torch.equal(body.bn1.running_mean, source.bn1.running_mean)
    assert torch.equal(body.layer3[1].conv2.weight, source.layer3[1].conv2.weight)
    # resnet18's levels: act1 (stride 2), layer1 (4), layer2-4 (8-32); the top 3 train.
    trainable = {n.split(".")[0] for n, p in body.named_parameters() if p.requires_grad}
    assert trainable == {"layer2", "layer3", "layer4"}
    assert backbone.featmap_names == ["0", "1", "2"] and backbone.num_levels == 4

    model = tiny_maskrcnn(
        backbone=backbone,
        anchor_sizes=[32, 64, 128, 256],
        box_head=None,
        mask_head=None,
    )
    marked = pretrained_parameter_names(model)
    assert marked == {f"backbone.body.{n}" for n, _ in body.named_parameters()}
    fresh = {n for n, _ in model.named_parameters()} - marked
    assert fresh and all(n.startswith(("backbone.fpn.", "rpn.", "roi_heads.")) for n in fresh)

    everything = build_backbone(
        "timm_fpn",
        model_name="resnet18",
        pretrained_file=path,
        trainable_layers=5,
        frozen_bn=False,
        fpn_channels=8,
    )
    assert isinstance(everything.body.bn1, torch.nn.BatchNorm2d)
    assert all(p.requires_grad for p in everything.parameters())


def test_timm_fpn_trainable_layers_counts_timms_levels():
    # convnext_atto: stages 0-3 are its levels; the stem feeds level 0 and freezes with it.
    backbone = build_backbone(
        "timm_fpn", model_name="convnext_atto", trainable_layers=2, fpn_channels=8
    )
    trainable = {n.split(".")[1] for n, p in backbone.named_parameters() if p.requires_grad}
    assert trainable == {"stages_2", "stages_3", "inner_blocks", "layer_blocks"}
    frozen = build_backbone("timm_fpn", model_name="resnet18", trainable_layers=0, fpn_channels=8)
    assert not any(p.requires_grad for p in frozen.body.parameters())
    assert all(p.requires_grad for p in frozen.fpn.parameters())


def test_timm_fpn_without_extra_pool():
    backbone = build_backbone(
        "timm_fpn", model_name="resnet18", out_indices=[3, 4], extra_pool=False, fpn_channels=8
    )
    with torch.no_grad():
        assert list(backbone(torch.zeros(1, 3, 64, 64))) == ["0", "1"]
    assert backbone.num_levels == 2


@pytest.mark.parametrize(
    "entry, options, words",
    [
        ("timm", dict(model_name=VIT, pretrained=True), ["pretrained_file", "downloaded"]),
        ("timm_fpn", dict(model_name="resnet18", pretrained=True), ["pretrained_file"]),
        ("timm", dict(model_name=VIT, pretrained_file="/no/such/vit.pth"), ["/no/such/vit.pth"]),
        ("timm", dict(model_name="vit_tiny_patch16"), ["did you mean", "vit_tiny_patch16_224"]),
        ("timm_fpn", dict(model_name="resnet_18"), ["did you mean", "'resnet18'"]),
        ("timm", dict(model_name="hf-hub:timm/resnet18.a1_in1k"), ["hub", "pretrained_file"]),
        ("timm", dict(model_name="resnet18", num_classes=4), ["model.num_classes"]),
        ("timm_fpn", dict(model_name="resnet18", trainable_layer=2), ["'trainable_layers'"]),
        ("timm_fpn", dict(model_name="resnet18", trainable_layers=6), ["[0, 5]"]),
        ("timm_fpn", dict(model_name="resnet18", out_indices=[3, 2]), ["out_indices"]),
    ],
)
def test_bad_options_are_one_line_config_errors(entry, options, words):
    with pytest.raises(ConfigError) as error:
        build_backbone(entry, **options)
    message = _one_line(error)
    for word in words:
        assert word in message


def test_a_file_of_another_model_is_refused(tmp_path):
    torch.manual_seed(0)
    # A pgtrain checkpoint of a classifier: timm's names under "backbone.", none of them fit.
    wrapped = ImageClassifier(backbone=build_backbone("timm", model_name="resnet18"), num_classes=2)
    path = _save(wrapped, tmp_path / "classifier.pth")
    with pytest.raises(CheckpointError) as error:
        build_backbone("timm", model_name="resnet18", pretrained_file=path)
    message = _one_line(error)
    assert "provides none" in message and "train.init_checkpoint" in message
    with pytest.raises(CheckpointError) as error:
        build_backbone("timm_fpn", model_name="resnet18", pretrained_file=path)
    assert "provides none" in _one_line(error)
    other = _save(timm.create_model("resnet18"), tmp_path / "resnet18.pth")
    with pytest.raises(CheckpointError) as error:  # shapes that do not fit
        build_backbone("timm", model_name="resnet50", pretrained_file=other)
    assert "does not load into timm's 'resnet50'" in _one_line(error)


def test_parameters_a_file_lacks_are_not_marked_pretrained(tmp_path, caplog):
    torch.manual_seed(0)
    source = timm.create_model("convnext_atto")
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("stages.3.")}
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with caplog.at_level("WARNING", logger="pgtrain.modeling"):
        backbone = build_backbone(
            "timm_fpn", model_name="convnext_atto", pretrained_file=str(path), fpn_channels=8
        )
    names = {f"body.{n}" for n, _ in backbone.body.named_parameters()}
    lacking = {n for n in names if n.startswith("body.stages_3.")}
    assert lacking and backbone.pretrained_parameter_names == names - lacking
    assert any("start fresh" in r.getMessage() for r in caplog.records)
    assert torch.equal(
        backbone.body.stages_2.blocks[0].conv_dw.weight, source.stages[2].blocks[0].conv_dw.weight
    )


def test_missing_timm_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` raises ImportError
    for entry in ("timm", "timm_fpn"):
        with pytest.raises(ConfigError) as error:
            build_backbone(entry, model_name="resnet18")
        assert "pip install 'pgtrain[timm]'" in _one_line(error)
