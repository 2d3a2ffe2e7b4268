"""Training functions that tests run in spawned processes (imported by name, so module level)."""

import torch

from pgtrain.data import ToyClassificationDataset, build_train_loader
from pgtrain.engine import Trainer, create_ddp_model
from pgtrain.modeling import MLPClassifier
from pgtrain.utils import comm


def train_toy(out_path: str, total_batch_size: int = 8, max_iter: int = 5) -> None:
    """Trains the toy MLP with SGD (momentum) and writes rank 0's weights to `out_path`."""
    torch.set_num_threads(1)
    torch.manual_seed(0)  # the same initial weights on every rank (DDP broadcasts them anyway)
    model = MLPClassifier(in_dim=8, hidden_dim=16, depth=2, num_classes=3)
    dataset = ToyClassificationDataset(num_samples=64, dim=8, num_classes=3, seed=0)
    loader = build_train_loader(dataset, total_batch_size=total_batch_size, seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    trainer = Trainer(create_ddp_model(model), loader, optimizer)
    trainer.train(0, max_iter)
    if comm.is_main_process():
        losses = [v for v, _ in trainer.storage.history("total_loss").values()]
        torch.save({"model": model.state_dict(), "losses": torch.tensor(losses)}, out_path)


def epoch_length_of_toy(out_path: str, overrides: list[str]) -> None:
    """Builds the toy run (train.epochs set) and writes what rank 0 worked out for its length."""
    import json

    from pgtrain.config import LazyConfig
    from pgtrain.engine import build_run

    torch.set_num_threads(1)
    cfg = LazyConfig.apply_overrides(LazyConfig.load("configs/quick/toy.py"), overrides)
    run = build_run(cfg)
    if comm.is_main_process():
        length = run.length
        with open(out_path, "w") as f:
            json.dump(
                {
                    "per_process": run.loader.batch_sampler.batch_size,
                    "batch": length.batch,
                    "iters_per_epoch": length.iters_per_epoch,
                    "max_iter": run.cfg.train.max_iter,
                },
                f,
            )


def count_gradient_syncs(out_path: str, accumulations: list[int], steps: int) -> None:
    """Trains the toy MLP under DDP for `steps` steps at each gradient accumulation, counting the
    gradient all-reduces DDP makes (a comm hook that counts, then averages like DDP's default)."""
    import json

    import torch.distributed as dist

    torch.set_num_threads(1)
    counts = {}
    for accumulation in accumulations:
        torch.manual_seed(0)
        model = create_ddp_model(MLPClassifier(in_dim=8, hidden_dim=16, depth=2, num_classes=3))
        calls = []

        def counting_allreduce(state, bucket, calls=calls):
            calls.append(1)
            tensor = bucket.buffer().div_(dist.get_world_size())
            work = dist.all_reduce(tensor, async_op=True)
            return work.get_future().then(lambda fut: fut.value()[0])

        model.register_comm_hook(None, counting_allreduce)
        dataset = ToyClassificationDataset(num_samples=64, dim=8, num_classes=3, seed=0)
        loader = build_train_loader(dataset, total_batch_size=8, seed=0)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        Trainer(model, loader, optimizer, accumulation=accumulation).train(0, steps)
        counts[accumulation] = len(calls)
    if comm.is_main_process():
        with open(out_path, "w") as f:
            json.dump(counts, f)
