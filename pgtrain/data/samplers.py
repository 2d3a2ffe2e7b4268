"""Samplers: an infinite, sharded, resumable training stream and a sharded inference order."""

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

from pgtrain.utils import comm

__all__ = ["AspectRatioGroupedBatchSampler", "TrainingSampler", "InferenceSampler"]


class TrainingSampler(Sampler[int]):
    """Yields dataset indices forever: a new permutation each epoch, sharded across ranks.

    All ranks walk one global stream (epoch permutations seeded by ``seed + epoch``) and rank
    ``r`` takes every ``world_size``-th index starting at ``r``. So a global batch is the same set
    of samples whatever the number of processes, and `seek` can jump to any position in O(1),
    which is how a resumed run sees exactly the data an unbroken run would have.
    """

    def __init__(self, size: int, *, shuffle: bool = True, seed: int = 0) -> None:
        if size <= 0:
            raise ValueError("TrainingSampler needs a non-empty dataset")
        self._size = size
        self._shuffle = shuffle
        self._seed = seed
        self._rank = comm.get_rank()
        self._world = comm.get_world_size()
        self._start = 0

    def seek(self, num_samples: int) -> None:
        """Makes the next iteration start after the first `num_samples` samples of this rank."""
        self._start = num_samples

    def _order(self, epoch: int) -> torch.Tensor:
        if not self._shuffle:
            return torch.arange(self._size)
        return torch.randperm(
            self._size, generator=torch.Generator().manual_seed(self._seed + epoch)
        )

    def __iter__(self) -> Iterator[int]:
        position = self._start * self._world + self._rank  # index into the global stream
        while True:
            epoch, offset = divmod(position, self._size)
            taken = self._order(epoch)[offset :: self._world].tolist()
            yield from taken
            position += len(taken) * self._world


class InferenceSampler(Sampler[int]):
    """Yields each index once, in order, rank ``r`` taking the r-th contiguous shard."""

    def __init__(self, size: int) -> None:
        world, rank = comm.get_world_size(), comm.get_rank()
        shard = (size + world - 1) // world
        self._indices = range(rank * shard, min(size, (rank + 1) * shard))

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices)

    def __len__(self) -> int:
        return len(self._indices)


class AspectRatioGroupedBatchSampler(Sampler[list[int]]):
    """Batches indices of an infinite sampler so that each batch holds one orientation only.

    Indices are put in their group's bucket in sampler order; a bucket that reaches `batch_size`
    is emitted as a batch (Detectron2's scheme, on indices, so no image is decoded). Batches of
    wide and tall images then pad to little wasted area.

    `seek(num_batches)` makes the next iteration start after that many batches. The buckets carry
    indices across batches, so seeking replays the index stream from the sampler's start (cheap:
    no data is loaded; about a second per million samples).
    """

    def __init__(self, sampler: Sampler[int], group_ids: Sequence[int], batch_size: int) -> None:
        """Wraps `sampler` (infinite) with `group_ids[i]` the group (0 or 1...) of index i."""
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.sampler = sampler
        self.batch_size = batch_size
        self._group_ids = list(group_ids)
        self._skip = 0

    def seek(self, num_batches: int) -> None:
        """Makes the next iteration start after the first `num_batches` batches."""
        self._skip = num_batches

    def _batches(self) -> Iterator[list[int]]:
        buckets: dict[int, list[int]] = {}
        group_ids, size = self._group_ids, self.batch_size
        for index in self.sampler:
            bucket = buckets.setdefault(group_ids[index], [])
            bucket.append(index)
            if len(bucket) == size:
                yield bucket[:]
                bucket.clear()

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._batches()
        for _ in range(self._skip):
            next(batches)
        yield from batches
