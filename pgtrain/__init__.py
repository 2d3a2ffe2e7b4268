"""pgtrain: a Detectron2-style training framework for PyTorch built around parameter groups."""

__version__ = "0.1.0"

__all__ = ["__version__"]
