"""Install pgtrain: `pip install -e ".[dev]"` (the Makefile does this for you)."""

from setuptools import find_packages, setup

setup(
    name="pgtrain",
    version="0.1.0",
    description="A Detectron2-style training framework for PyTorch built around parameter groups.",
    python_requires=">=3.11",
    # configs/ and projects/ are packages too, so config files can import each other
    # (`from configs.common.train import train`) and YAML targets like
    # `projects.maskrcnn.builders.X` resolve from any working directory.
    packages=find_packages(include=["pgtrain", "pgtrain.*", "configs", "configs.*",
                                    "projects", "projects.*"]),
    install_requires=[
        "torch==2.14.1",
        "torchvision==0.29.1",
        "fvcore",
        "iopath",
        "omegaconf>=2.4",  # structured configs with Literal (the typed settings)
        "pycocotools",
        "tensorboard",
        "tqdm",
        "matplotlib",
        "scikit-learn",  # its bundled 8x8 digits are the ViT project's offline dataset
    ],
    # `pgtrain train --config ...`, `pgtrain predict ...`: every tool from any folder
    entry_points={"console_scripts": ["pgtrain=pgtrain.cli:main"]},
    # timm: test-only, for the layer-decay parity tests against timm's own grouping
    extras_require={
        # tools/submit.py: Slurm (and submitit's local executor) with requeue on preemption
        "slurm": ["submitit==1.5.4"],
        # schedule-free AdamW / SGD (the trainer switches their train / eval modes)
        "schedulefree": ["schedulefree==1.4.1"],
        # timm models as backbones (the "timm" and "timm_fpn" entries), weights from local files
        "timm": ["timm>=1.0"],
        # experiment trackers beside TensorBoard (train.trackers=[mlflow, wandb])
        "mlflow": ["mlflow-skinny>=3"],
        "wandb": ["wandb>=0.19"],
        "dev": [
            "pytest",
            "ruff",
            "timm",
            "submitit==1.5.4",
            "schedulefree==1.4.1",
            "mlflow-skinny>=3",
            "wandb>=0.19",
        ],
    },
)
