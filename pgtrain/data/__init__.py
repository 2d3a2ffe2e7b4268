"""Datasets, samplers, transforms and loaders."""

from pgtrain.data.classification import (
    DigitsDataset,
    ImageFolderClassification,
    image_folder_dataset,
)
from pgtrain.data.coco import COCOInstanceDataset
from pgtrain.data.detection import (
    build_detection_test_loader,
    build_detection_train_loader,
    build_test_transforms,
    build_train_transforms,
    collate_list,
)
from pgtrain.data.loaders import build_test_loader, build_train_loader
from pgtrain.data.samplers import AspectRatioGroupedBatchSampler, InferenceSampler, TrainingSampler
from pgtrain.data.shapes import (
    CLASS_SETS,
    default_shapes_root,
    ensure_shapes,
    shapes_dataset,
    shapes_path,
)
from pgtrain.data.toy import ToyClassificationDataset
from pgtrain.errors import DatasetError, DatasetNotFoundError

__all__ = [
    "CLASS_SETS",
    "AspectRatioGroupedBatchSampler",
    "COCOInstanceDataset",
    "DatasetError",
    "DatasetNotFoundError",
    "DigitsDataset",
    "ImageFolderClassification",
    "InferenceSampler",
    "ToyClassificationDataset",
    "TrainingSampler",
    "build_detection_test_loader",
    "build_detection_train_loader",
    "build_test_loader",
    "build_test_transforms",
    "build_train_loader",
    "build_train_transforms",
    "collate_list",
    "default_shapes_root",
    "ensure_shapes",
    "image_folder_dataset",
    "shapes_dataset",
    "shapes_path",
]
