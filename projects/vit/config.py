"""Fine-tune a ViT-tiny on scikit-learn's digits with layer decay and a 10x head, on a CPU.

Two stages: pre-train on the digits 0-5 (one LR everywhere), then fine-tune on the unseen digits
6-9. The head changes shape (6 -> 4 classes), so the checkpointer skips it and it starts fresh;
the `head.*` rule trains it at 10x while layer decay (0.75) keeps the pre-trained blocks close to
where they were::

    python tools/train_net.py --config projects/vit/config.py \\
        digits.classes=[0,1,2,3,4,5] model.num_classes=6 optimizer.params.decay=1.0 \\
        optimizer.params.rules=[] train.output_dir=./output/vit_digits_pretrain
    python tools/train_net.py --config projects/vit/config.py \\
        train.init_checkpoint=./output/vit_digits_pretrain/model_final.pth

Without ``train.init_checkpoint`` the second command trains from scratch. For a user's own data,
a config importing this one sets ``dataloader.train.dataset =
L(image_folder_dataset)(root="/data/train", image_size=224, train=True)``, the test set with
``train=False, classes_from="${dataloader.train.dataset.root}"`` (labels matched to the training
folders by name, so a class missing from the validation folder shifts nothing),
``model.backbone.img_size=224`` and ``model.num_classes``.
"""

from configs.common.optim import AdamW
from configs.common.schedules import cosine
from configs.common.train import train
from pgtrain.config import LazyCall as L
from pgtrain.data import DigitsDataset, build_test_loader, build_train_loader
from pgtrain.evaluation import ClassificationEvaluator
from pgtrain.modeling import ImageClassifier, build_backbone

__config__ = True

# The digits to train on (labels are their positions here), the image side, and the split.
digits = dict(classes=[6, 7, 8, 9], image_size=32, val_fraction=0.2, seed=0)

model = L(ImageClassifier)(
    # 32 px in 4 px patches: 64 tokens, about half a second per batch of 32 on 2 cores at depth 6.
    backbone=L(build_backbone)(
        name="vit_tiny",
        img_size="${digits.image_size}",
        patch_size=4,
        depth=6,
        drop_path_rate=0.1,
    ),
    num_classes=4,  # len(digits.classes); a label out of range is reported by the model
    label_smoothing=0.1,
)


def _digits(split: str, augment: bool):
    return L(DigitsDataset)(
        split=split,
        classes="${digits.classes}",
        image_size="${digits.image_size}",
        val_fraction="${digits.val_fraction}",
        seed="${digits.seed}",
        augment=augment,
    )


dataloader = dict(
    train=L(build_train_loader)(
        dataset=_digits("train", augment=True), total_batch_size=32, seed="${train.seed}"
    ),
    test=L(build_test_loader)(dataset=_digits("val", augment=False), batch_size=128),
    evaluator=L(ClassificationEvaluator)(topk=[1, 5]),  # top-5 is 100% with 5 classes or fewer
)

optimizer = AdamW
optimizer.lr = 5e-4
optimizer.weight_decay = 0.05
# scale = 0.75 ** (depth + 1 - layer_id): embeddings are layer 0, blocks.i layer i + 1, the final
# norm and the head the last layer. No weight decay for biases, 1-D tensors (norms) and the ViT's
# no_weight_decay() hints (pos_embed, cls_token); the head's 10x multiplies its layer's scale.
optimizer.params.builder = "layer_decay"
optimizer.params.decay = 0.75
optimizer.params.rules = [dict(match="head.*", lr_mult=10.0, group="head")]

lr_scheduler = cosine
lr_scheduler.schedule.warmup_length = 0.1

train.output_dir = "./output/vit_digits"
train.max_iter = 300
train.device = "auto"
train.checkpoint.period = 100
# Under train.strategy=fsdp (--num-processes 2 or more) each transformer block is one FSDP unit.
train.fsdp.shard = ["Block"]
train.eval_period = 100
train.log_period = 20
