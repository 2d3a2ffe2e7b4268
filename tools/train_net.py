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
    BatchSizeLRScalingHook,
    EvalHook,
    IterationTimer,
    LRSchedulerHook,
    NonFiniteLossGuard,
    ParamGroupStatsHook,
    PeriodicWriter,
    Trainer,
    create_ddp_model,
    default_argument_parser,
    default_setup,
    default_writers,
    launch,
    resolve_device,
    scale_lrs_to_batch,
    user_errors_exit,
)
from pgtrain.evaluation import inference_on_dataset
from pgtrain.param_groups import format_param_group_table
from pgtrain.solver import (
    DynamicLRScaling,
    build_lr_scheduler,
    build_optimizer,
    build_param_groups_from_config,
)
from pgtrain.utils import comm

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


def build_hooks(cfg, model, scheduler, checkpointer, effective_batch):
    """The default hooks, in the order they run (the comments say why)."""
    train = cfg.train
    dynamic = train.lr_scaling.dynamic
    return [
        IterationTimer(),
        NonFiniteLossGuard(),  # after_backward: stops before the optimizer steps on a NaN loss
        ParamGroupStatsHook(train.param_group_stats_period),  # grads and weights around the step
        LRSchedulerHook(scheduler),  # records the LRs this step used, then steps the schedule
        # Rescales LRs for the next step when the batch size changed (after the schedule step).
        BatchSizeLRScalingHook(DynamicLRScaling(scheduler, effective_batch, train.lr_scaling.rule))
        if dynamic
        else None,
        # Saves after the scheduler stepped: the saved state is that of the next iteration.
        PeriodicCheckpointer(checkpointer, train.checkpoint.period, max_iter=train.max_iter),
        EvalHook(train.eval_period, functools.partial(do_test, cfg, model)),
        PeriodicWriter(
            default_writers(train.output_dir, train.max_iter), train.log_period
        ),  # last: this step's eval metrics land too
    ]


def do_train(cfg, resume):
    """Builds everything from `cfg` and trains; resumes from the last checkpoint if asked."""
    train = cfg.train
    model = instantiate(cfg.model).to(resolve_device(train.device))
    # Weights first (the last checkpoint on resume, else train.init_checkpoint), so a `fresh`
    # param-group rule knows which parameters the initial weights did not provide.
    weights = Checkpointer(model, train.output_dir).resume_or_load(
        train.init_checkpoint, resume=resume
    )
    groups = build_param_groups_from_config(cfg.optimizer, model, fresh=weights.fresh)
    logger.info("Parameter groups:\n%s", format_param_group_table(groups, model))
    optimizer = build_optimizer(cfg.optimizer, model, groups=groups)
    loader = instantiate(cfg.dataloader.train, "dataloader.train")
    # Batch-size LR scaling, once, before the scheduler takes the groups' initial LRs.
    effective_batch = scale_lrs_to_batch(
        optimizer,
        loader,
        accumulation=train.accumulation,
        reference_batch=train.lr_scaling.reference_batch,
        rule=train.lr_scaling.rule,
    )
    scheduler = build_lr_scheduler(cfg.lr_scheduler, optimizer)
    amp = {"precision": train.amp.precision} if train.amp.enabled else {}
    trainer = (AMPTrainer if train.amp.enabled else Trainer)(
        create_ddp_model(model, **train.ddp),
        loader,
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
    checkpointer.fresh = weights.fresh  # recorded in every checkpoint, for later resumes
    trainer.register_hooks(build_hooks(cfg, model, scheduler, checkpointer, effective_batch))
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
    args = parser.parse_intermixed_args()
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
