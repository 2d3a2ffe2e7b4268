"""Stage 1 of the ViT project: pre-train on the digits 0-5 with one LR everywhere.

    python tools/train_net.py --config projects/vit/pretrain_config.py

Stage 2 (`config.py`) fine-tunes its `model_final.pth` on the unseen digits 6-9 with a new head.
"""

from .config import dataloader, digits, lr_scheduler, model, optimizer, train

__config__ = True

digits.classes = [0, 1, 2, 3, 4, 5]
model.num_classes = 6
optimizer.params.decay = 1.0  # no layer decay when training from scratch
optimizer.params.rules = []
train.output_dir = "./output/vit_digits_pretrain"
train.max_iter = 600

__all__ = ["dataloader", "digits", "lr_scheduler", "model", "optimizer", "train"]
