#!/usr/bin/env python
"""Train (or evaluate) any pgtrain config.

    python tools/train_net.py --config configs/quick/toy.py train.max_iter=200
    python tools/train_net.py --config configs/quick/toy.py --resume
    python tools/train_net.py --config configs/quick/toy.py --num-processes 2   # CPU, gloo

The config provides `model`, `optimizer`, `lr_scheduler`, `dataloader.train` and `train`;
`dataloader.test` with `dataloader.evaluator` enables evaluation.
"""

import functools
import logging

from pgtrain.checkpoint import Checkpointer, PeriodicCheckpointer
from pgtrain.config import LazyConfig, instantiate
from pgtrain.engine import (
    AMPTrainer,
    EvalHook,
    IterationTimer,
    LRSchedulerHook,
    NonFiniteLossGuard,
    PeriodicWriter,
    Trainer,
    create_ddp_model,
    default_argument_parser,
    default_setup,
    launch,
    resolve_device,
    user_errors_exit,
)
from pgtrain.evaluation import inference_on_dataset
from pgtrain.param_groups import format_param_group_table
from pgtrain.solver import build_lr_scheduler, build_optimizer
from pgtrain.utils import comm
from pgtrain.utils.writers import ConsoleWriter, JSONWriter, TensorboardWriter

logger = logging.getLogger("pgtrain.train_net")


def do_test(cfg, model):
    """Evaluates `model` on dataloader.test with dataloader.evaluator; returns the metrics."""
    if "test" not in cfg.dataloader or "evaluator" not in cfg.dataloader:
        return {}
    results = inference_on_dataset(
        model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator)
    )
    logger.info("Evaluation: %s", results)
    return results


def do_train(cfg, resume):
    """Builds everything from `cfg` and trains; resumes from the last checkpoint if asked."""
    train = cfg.train
    model = instantiate(cfg.model).to(resolve_device(train.device))
    # Weights first (the last checkpoint on resume, else train.init_checkpoint), so a `fresh`
    # param-group rule knows which parameters the initial weights did not provide.
    weights = Checkpointer(model, train.output_dir).resume_or_load(
        train.init_checkpoint, resume=resume
    )
    optimizer = build_optimizer(cfg.optimizer, model, fresh=weights.fresh)
    logger.info("Parameter groups:\n%s", format_param_group_table(optimizer, model))
    ddp_model = create_ddp_model(model, **train.ddp)
    trainer_cls = AMPTrainer if train.amp.enabled else Trainer
    amp = {"precision": train.amp.precision} if train.amp.enabled else {}
    trainer = trainer_cls(
        ddp_model,
        instantiate(cfg.dataloader.train),
        optimizer,
        accumulation=train.accumulation,
        clip_grad_norm=train.clip_grad_norm,
        **amp,
    )
    checkpointer = Checkpointer(
        model,
        train.output_dir,
        keep_last=train.checkpoint.keep_last,
        save_to_disk=comm.is_main_process(),
        trainer=trainer,
    )
    writers = []
    if comm.is_main_process():
        writers = [
            ConsoleWriter(train.max_iter),
            JSONWriter(f"{train.output_dir}/metrics.json"),
            TensorboardWriter(train.output_dir),
        ]
    trainer.register_hooks(
        [
            IterationTimer(),
            NonFiniteLossGuard(),  # after_backward: stops before the optimizer steps on a NaN loss
            LRSchedulerHook(build_lr_scheduler(cfg.lr_scheduler, optimizer)),  # records LRs, steps
            # Save after the scheduler stepped: the saved state is that of the next iteration.
            PeriodicCheckpointer(checkpointer, train.checkpoint.period, max_iter=train.max_iter),
            EvalHook(train.eval_period, functools.partial(do_test, cfg, model)),
            PeriodicWriter(
                writers, train.log_period
            ),  # last: the eval metrics of this step land too
        ]
    )
    checkpointer.fresh = weights.fresh  # recorded in every checkpoint, for later resumes
    start_iter = 0
    if resume and checkpointer.has_checkpoint():
        start_iter = checkpointer.resume_or_load("", resume=True).extra["iteration"] + 1
    trainer.train(start_iter, train.max_iter)


def main(cfg, args):
    """Runs in every process: set up, then train or evaluate."""
    default_setup(cfg, args)
    if args.eval_only:
        model = instantiate(cfg.model).to(resolve_device(cfg.train.device))
        Checkpointer(model, cfg.train.output_dir).resume_or_load(
            cfg.train.init_checkpoint, resume=args.resume
        )
        return do_test(cfg, model)
    do_train(cfg, args.resume)


def cli():
    """Parses the command line, loads the config (errors surface before processes start)."""
    parser = default_argument_parser()
    parser.add_argument(
        "--head-lr-multiplier",
        type=float,
        metavar="X",
        help="seed 001's grouping: the Mask R-CNN box and mask predictors at X "
        "times the base LR (optimizer.params.builder=head_multiplier)",
    )
    args = parser.parse_args()
    if args.head_lr_multiplier is not None:
        args.opts += [
            "optimizer.params.builder=head_multiplier",
            f"+optimizer.params.head_lr_multiplier={args.head_lr_multiplier}",
        ]
    with user_errors_exit():
        cfg = LazyConfig.apply_overrides(LazyConfig.load(args.config), args.opts)
        per_machine = args.num_gpus or args.num_processes
        launch(
            main,
            per_machine,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(cfg, args),
            backend="nccl" if args.num_gpus else "gloo",
        )


if __name__ == "__main__":
    cli()
