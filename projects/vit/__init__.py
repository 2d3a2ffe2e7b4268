"""The ViT project: digit classification with layer-wise LR decay (config.py)."""

__all__: list[str] = []
