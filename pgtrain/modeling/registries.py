"""The model registries: BACKBONES and HEADS."""

from pgtrain.registry import Registry

__all__ = ["BACKBONES", "HEADS"]

BACKBONES = Registry(
    "BACKBONES",
    hint="built-in entries register on `import pgtrain.modeling`; a project's on "
    "importing its module from its config file",
)
HEADS = Registry(
    "HEADS",
    hint="built-in entries register on `import pgtrain.modeling`; a project's on "
    "importing its module from its config file",
)
