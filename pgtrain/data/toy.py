"""A generated classification dataset for smoke runs and tests: Gaussian clusters in R^d."""

import torch
from torch.utils.data import Dataset

__all__ = ["ToyClassificationDataset"]


class ToyClassificationDataset(Dataset):
    """Points drawn around `num_classes` random centres; samples are ``{"features", "label"}``.

    The centres depend only on `seed`, so the "train" and "test" splits share them; each split
    draws its own points. Everything is generated in memory, deterministically.
    """

    def __init__(
        self,
        *,
        split: str = "train",
        num_samples: int = 512,
        dim: int = 16,
        num_classes: int = 4,
        noise: float = 1.0,
        seed: int = 0,
    ) -> None:
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got '{split}'")
        centres = torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(seed)) * 2
        g = torch.Generator().manual_seed(seed + (1 if split == "train" else 2))
        self.labels = torch.randint(num_classes, (num_samples,), generator=g)
        self.features = centres[self.labels] + noise * torch.randn(num_samples, dim, generator=g)
        self.num_classes = num_classes

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"features": self.features[index], "label": self.labels[index]}
