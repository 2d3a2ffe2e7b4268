"""build_train_loader and build_test_loader: DataLoaders with pgtrain's samplers."""

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset

from pgtrain.data.samplers import (
    AspectRatioGroupedBatchSampler,
    InferenceSampler,
    TrainingSampler,
)
from pgtrain.errors import ConfigError
from pgtrain.utils import comm

__all__ = ["build_train_loader", "build_test_loader"]


def build_train_loader(
    dataset: Dataset,
    *,
    total_batch_size: int,
    num_workers: int = 0,
    seed: int = 0,
    shuffle: bool = True,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    group_ids: Sequence[int] | None = None,
) -> DataLoader:
    """Returns an infinite, resumable training loader; each process loads its share of a batch.

    Args:
        dataset: a map-style dataset.
        total_batch_size: the batch of one micro-step summed over all processes; it must divide
            by the number of processes.
        num_workers: loader worker processes per training process.
        seed: seeds the sample order (shared by all ranks) and the workers' RNGs.
        shuffle: a new random order each epoch, else dataset order.
        collate_fn: turns a list of samples into a batch (torch's default collation if None).
        group_ids: if given, each batch holds samples of one group only (``group_ids[i]`` is
            sample i's group, e.g. its orientation: aspect-ratio grouping).
    """
    world = comm.get_world_size()
    if total_batch_size <= 0 or total_batch_size % world:
        raise ConfigError(
            f"dataloader.train.total_batch_size={total_batch_size} must be a positive multiple of "
            f"the number of processes ({world})"
        )
    if len(dataset) == 0:
        source = getattr(dataset, "json_file", None)
        raise ConfigError(
            f"dataloader.train.dataset: the {type(dataset).__name__} is empty"
            f"{f' ({source} has no usable images)' if source else ''}; check its annotation "
            "file and filters (filter_empty=True keeps only images with objects)"
        )
    sampler = TrainingSampler(len(dataset), shuffle=shuffle, seed=seed)
    # The loader's own generator keeps iterator creation from drawing on the global RNG, so a
    # resumed run's model RNG (dropout...) stays in step with an unbroken run.
    generator = torch.Generator().manual_seed(seed + comm.get_rank())
    per_process = total_batch_size // world
    if group_ids is None:
        batch_sampler = BatchSampler(sampler, per_process, drop_last=True)
    else:
        batch_sampler = AspectRatioGroupedBatchSampler(sampler, group_ids, per_process)
    return DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        num_workers=num_workers,
        collate_fn=collate_fn,
        generator=generator,
        persistent_workers=num_workers > 0,
    )


def build_test_loader(
    dataset: Dataset,
    *,
    batch_size: int = 1,
    num_workers: int = 0,
    collate_fn: Callable[[list[Any]], Any] | None = None,
) -> DataLoader:
    """Returns a loader that visits this rank's shard of `dataset` once, in order."""
    return DataLoader(
        dataset,
        sampler=InferenceSampler(len(dataset)),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=collate_fn,
    )
