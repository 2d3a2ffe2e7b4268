"""The ViT digits run of `config.py` with Muon + AdamW instead of AdamW with layer decay.

    python tools/train_net.py --config projects/vit/muon_config.py

The `muon` builder routes the blocks' weight matrices to Muon and the patch embedding (the stem),
``pos_embed``, ``cls_token``, norms, biases and the head to AdamW; the run-start table shows each
group's algorithm and why (``tools/inspect_param_groups.py --config projects/vit/muon_config.py
--explain backbone.blocks.0.attn.qkv.weight``). With Moonlight's LR adjustment
(``adjust_lr_fn="match_rms_adamw"``) one base LR suits both; the head keeps its 10x.
"""

from configs.common.optim import MuonAdamW

from .config import dataloader, digits, lr_scheduler, model, train

__config__ = True

optimizer = MuonAdamW
optimizer.lr = 5e-4
optimizer.weight_decay = 0.05
optimizer.params.rules = [dict(match="head.*", lr_mult=10.0, group="head")]
train.output_dir = "./output/vit_digits_muon"

__all__ = ["dataloader", "digits", "lr_scheduler", "model", "optimizer", "train"]
