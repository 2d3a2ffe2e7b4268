"""HEADS: every entry builds torchvision's module with torchvision's names and the asked sizes."""

import pytest
import torch

from pgtrain.errors import ConfigError
from pgtrain.modeling import heads
from pgtrain.modeling.heads import build_head
from pgtrain.modeling.registries import HEADS

# name -> (arguments, input shape, expected output shapes, expected parameter names)
CASES = {
    "conv_fc_box_head": (
        {"in_channels": 8, "conv_dims": [16, 16], "fc_dims": [32], "norm": "batch_norm"},
        (5, 8, 7, 7),
        [(5, 32)],
        [
            "0.0.weight",
            "0.1.weight",
            "0.1.bias",
            "1.0.weight",
            "1.1.weight",
            "1.1.bias",
            "3.weight",
            "3.bias",
        ],
    ),
    "two_mlp_box_head": (
        {"in_channels": 8, "representation_size": 32},
        (5, 8, 7, 7),
        [(5, 32)],
        ["fc6.weight", "fc6.bias", "fc7.weight", "fc7.bias"],
    ),
    "fast_rcnn_predictor": (
        {"in_channels": 32, "num_classes": 3},
        (5, 32),
        [(5, 3), (5, 12)],
        ["cls_score.weight", "cls_score.bias", "bbox_pred.weight", "bbox_pred.bias"],
    ),
    "conv_mask_head": (
        {"in_channels": 8, "num_convs": 2, "conv_dim": 16},
        (5, 8, 14, 14),
        [(5, 16, 14, 14)],
        ["0.0.weight", "0.0.bias", "1.0.weight", "1.0.bias"],
    ),
    "mask_rcnn_predictor": (
        {"in_channels": 16, "dim_reduced": 4, "num_classes": 3},
        (5, 16, 14, 14),
        [(5, 3, 28, 28)],
        ["conv5_mask.weight", "conv5_mask.bias", "mask_fcn_logits.weight", "mask_fcn_logits.bias"],
    ),
}
BUILT_IN = [n for n, fn in HEADS if fn.__module__ == heads.__name__]


def test_every_built_in_head_has_a_case():
    assert sorted(BUILT_IN) == sorted(CASES)


@pytest.mark.parametrize("name", BUILT_IN)
def test_head_output_shapes_and_parameter_names(name):
    kwargs, in_shape, out_shapes, param_names = CASES[name]
    head = build_head(name, **kwargs)
    out = head(torch.zeros(in_shape))
    outputs = out if isinstance(out, tuple) else (out,)
    assert [tuple(o.shape) for o in outputs] == out_shapes
    assert [n for n, _ in head.named_parameters()] == param_names


@pytest.mark.parametrize(
    "name, kwargs, key",
    [
        ("fast_rcnn_predictor", {"in_channels": 8, "num_classes": 1}, "num_classes"),
        ("mask_rcnn_predictor", {"num_classes": 3, "dim_reduced": 0}, "dim_reduced"),
        ("conv_mask_head", {"in_channels": 8, "num_convs": 0}, "num_convs"),
        ("two_mlp_box_head", {"in_channels": 8, "representation_size": 2.5}, "representation_size"),
    ],
)
def test_bad_sizes_name_the_argument(name, kwargs, key):
    with pytest.raises(ConfigError, match=f"{name}: {key}="):
        build_head(name, **kwargs)


def test_missing_argument_is_named():
    with pytest.raises(ConfigError, match="num_classes"):
        build_head("fast_rcnn_predictor", in_channels=8)
