"""The toy run: a small MLP on generated Gaussian clusters; trains in seconds on a CPU.

python tools/train_net.py --config configs/quick/toy.py
python tools/train_net.py --config configs/quick/toy.py train.max_iter=50 optimizer.lr=0.01
"""

from configs.common.optim import SGD
from configs.common.schedules import multistep
from configs.common.train import train
from pgtrain.config import LazyCall as L
from pgtrain.data import ToyClassificationDataset, build_test_loader, build_train_loader
from pgtrain.evaluation import ClassificationEvaluator
from pgtrain.modeling import MLPClassifier

__config__ = True

model = L(MLPClassifier)(in_dim=16, hidden_dim=64, depth=2, num_classes=4)

dataloader = dict(
    train=L(build_train_loader)(
        dataset=L(ToyClassificationDataset)(
            split="train", num_samples=2048, dim=16, num_classes=4, noise=3.0
        ),
        total_batch_size=32,
        seed="${train.seed}",
    ),
    test=L(build_test_loader)(
        dataset=L(ToyClassificationDataset)(
            split="test", num_samples=512, dim=16, num_classes=4, noise=3.0
        ),
        batch_size=128,
    ),
    evaluator=L(ClassificationEvaluator)(topk=[1, 2]),
)

optimizer = SGD
optimizer.lr = 0.005
# The head learns at 10x, as new heads do when fine-tuning (the fine-tuning recipes' multiplier).
optimizer.params.builder = "rules"
optimizer.params.rules = [dict(match="head.*", lr_mult=10.0, group="head")]

lr_scheduler = multistep

train.output_dir = "./output/toy"
train.max_iter = 300
train.checkpoint.period = 100
train.eval_period = 100
train.log_period = 20
train.device = "cpu"
