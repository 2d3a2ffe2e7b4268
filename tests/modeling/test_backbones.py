"""BACKBONES: every entry builds, gives the advertised pyramid, freezes and validates options."""

import pytest
import torch
from torchvision.ops.misc import FrozenBatchNorm2d

from pgtrain.errors import ConfigError, RegistryError
from pgtrain.modeling import backbones
from pgtrain.modeling.backbones import FPNBackbone, build_backbone
from pgtrain.modeling.registries import BACKBONES

# Entries of this module only: projects may register more backbones in the same session.
BUILT_IN = [n for n, fn in BACKBONES if fn.__module__ == backbones.__name__]


def test_all_families_are_registered():
    expected = {"resnet18_fpn", "resnet34_fpn", "resnet50_fpn", "resnet101_fpn"}
    assert set(BUILT_IN) == expected | {"mobilenet_v2_fpn", "mobilenet_v3_large_fpn"}


@pytest.mark.parametrize("name", BUILT_IN)
def test_entry_gives_pyramid_of_advertised_channels_and_strides(name):
    backbone = build_backbone(name, fpn_channels=16, returned_layers=(2, 3, 4))
    assert isinstance(backbone, FPNBackbone) and backbone.out_channels == 16
    with torch.no_grad():
        features = backbone(torch.zeros(1, 3, 64, 64))
    # P3-P5 at strides 8, 16, 32, then the max-pooled P6.
    assert {k: tuple(v.shape) for k, v in features.items()} == {
        "0": (1, 16, 8, 8),
        "1": (1, 16, 4, 4),
        "2": (1, 16, 2, 2),
        "pool": (1, 16, 1, 1),
    }
    assert backbone.featmap_names == ["0", "1", "2"] and backbone.num_levels == 4
    names = [n for n, _ in backbone.named_parameters()]
    assert names and all(n.startswith(("body.", "fpn.")) for n in names)


@pytest.mark.parametrize("name", ["resnet18_fpn", "mobilenet_v2_fpn"])
def test_default_is_torchvisions_p2_to_p6(name):
    backbone = build_backbone(name, fpn_channels=8)
    with torch.no_grad():
        features = backbone(torch.zeros(1, 3, 64, 64))
    assert [v.shape[-1] for v in features.values()] == [16, 8, 4, 2, 1]
    assert backbone.num_levels == 5


def test_no_extra_pool_level():
    backbone = build_backbone(
        "resnet18_fpn", fpn_channels=8, returned_layers=(3, 4), extra_pool=False
    )
    with torch.no_grad():
        assert list(backbone(torch.zeros(1, 3, 64, 64))) == ["0", "1"]
    assert backbone.num_levels == 2


def _trainable_body(backbone):
    return {
        n.split(".")[1]
        for n, p in backbone.named_parameters()
        if p.requires_grad and n.startswith("body.")
    }


def test_resnet_trainable_layers_freezes_lower_stages():
    backbone = build_backbone("resnet18_fpn", trainable_layers=2, fpn_channels=8)
    assert _trainable_body(backbone) == {"layer3", "layer4"}
    assert all(p.requires_grad for n, p in backbone.named_parameters() if n.startswith("fpn."))
    everything = build_backbone("resnet18_fpn", trainable_layers=5, fpn_channels=8)
    assert _trainable_body(everything) == {"conv1", "bn1", "layer1", "layer2", "layer3", "layer4"}


def test_mobilenet_trainable_layers_counts_stride_stages():
    # MobileNetV2 blocks 7-13 run at stride 16 (stage 3), 14-18 at stride 32 (stage 4).
    backbone = build_backbone("mobilenet_v2_fpn", trainable_layers=2, fpn_channels=8)
    assert _trainable_body(backbone) == {str(i) for i in range(7, 19)}
    frozen = build_backbone("mobilenet_v2_fpn", trainable_layers=0, fpn_channels=8)
    assert _trainable_body(frozen) == set()


def test_mobilenet_returns_the_end_of_each_stage():
    backbone = build_backbone("mobilenet_v2_fpn", fpn_channels=8)
    assert backbone.body.return_layers == {"3": "0", "6": "1", "13": "2", "18": "3"}
    widths = [block[0].in_channels for block in backbone.fpn.inner_blocks]
    assert widths == [24, 32, 96, 1280]


def test_frozen_batch_norm_follows_pretrained_unless_set():
    plain = build_backbone("resnet18_fpn", fpn_channels=8)
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in plain.modules())
    frozen = build_backbone("resnet18_fpn", fpn_channels=8, frozen_bn=True)
    assert isinstance(frozen.body.bn1, FrozenBatchNorm2d)


@pytest.mark.parametrize(
    "options, key",
    [
        ({"returned_layers": (0, 1)}, "returned_layers"),
        ({"returned_layers": (3, 2)}, "returned_layers"),
        ({"returned_layers": ()}, "returned_layers"),
        ({"trainable_layers": 6}, "trainable_layers"),
        ({"fpn_channels": 0}, "fpn_channels"),
    ],
)
def test_bad_options_name_the_option(options, key):
    with pytest.raises(ConfigError, match=key):
        build_backbone("mobilenet_v3_large_fpn", **options)


def test_unknown_name_and_argument_suggest_close_ones():
    with pytest.raises(RegistryError, match="did you mean 'resnet50_fpn'"):
        build_backbone("resnet5_fpn")
    with pytest.raises(ConfigError, match="did you mean 'fpn_channels'"):
        build_backbone("resnet18_fpn", fpn_channel=8)
