"""The ViT digits run of `config.py` with timm's ViT-Tiny as the backbone (layer decay unchanged).

    python tools/train_net.py --config projects/vit/timm_config.py
    python tools/train_net.py --config projects/vit/timm_config.py \\
        model.backbone.pretrained_file=/weights/vit_tiny_patch16_224.augreg_in21k_ft_in1k.safetensors

`ImageClassifier` keeps its head; the backbone is ``timm.create_model("vit_tiny_patch16_224",
num_classes=0, img_size=32, patch_size=4, depth=6, drop_path_rate=0.1)``, so parameter names are
timm's under ``backbone.`` and the ``layer_decay`` builder takes timm's own ``group_matcher()``
(the groups are those of ``timm.optim.param_groups_layer_decay``; the log's table shows them).
A weights file in timm's format (``.pth`` or ``.safetensors``, e.g. from the Hugging Face hub,
fetched beforehand: nothing is downloaded here) is loaded by timm, which resizes the patch and
position embeddings to 4 px patches on 32 px images and warns that the blocks beyond depth 6
fit nothing; the new head is then `fresh`.
"""

import pgtrain.modeling.timm_backbones  # noqa: F401  (registers the "timm" backbone)
from pgtrain.config import LazyCall as L
from pgtrain.modeling import build_backbone

from .config import dataloader, digits, lr_scheduler, model, optimizer, train

__config__ = True

model.backbone = L(build_backbone)(
    name="timm",
    model_name="vit_tiny_patch16_224",
    pretrained_file=None,  # a local timm weights file of vit_tiny_patch16_224, or None
    img_size="${digits.image_size}",
    patch_size=4,
    depth=6,  # of timm's 12: half a second per batch of 32 on 2 cores, as config.py's ViT
    drop_path_rate=0.1,
)

train.output_dir = "./output/vit_digits_timm"

__all__ = ["dataloader", "digits", "lr_scheduler", "model", "optimizer", "train"]
