"""Mask R-CNN fine-tuning: start from the base model trained on shapes set A, train on set B.

    python tools/train_net.py --config projects/maskrcnn/finetune_config.py \\
        train.init_checkpoint=output/maskrcnn/model_final.pth

Set B has other classes (star, hexagon, cross, ring), so the box and mask predictors change shape:
the checkpointer skips their old weights and reports them as fresh, and the `fresh` rule trains
exactly those at 10x while everything else starts from the base model. Compare with
``optimizer.params.rules=[]`` (one LR for everything, the recipe's bug) or
``--head-lr-multiplier 10`` (the recipe's name-matching fix); `finetune_study.py` runs all three.
"""

from .config import dataloader, lr_scheduler, model, optimizer, shapes, train

__config__ = True

shapes.set = "B"
model.num_classes = 5  # 4 shapes + background
optimizer.params.rules = [dict(fresh=True, lr_mult=10.0, group="new")]
train.init_checkpoint = "./output/maskrcnn/model_final.pth"
train.output_dir = "./output/maskrcnn_finetune"
train.max_iter = 400
train.eval_period = 200
train.checkpoint.period = 200

__all__ = ["dataloader", "lr_scheduler", "model", "optimizer", "shapes", "train"]
