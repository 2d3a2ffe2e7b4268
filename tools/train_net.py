#!/usr/bin/env python
"""Train (or evaluate) any pgtrain config.

    python tools/train_net.py --config configs/quick/toy.py train.max_iter=200
    python tools/train_net.py --config configs/quick/toy.py --resume
    python tools/train_net.py --config configs/quick/toy.py --num-processes 2   # CPU, gloo

The config provides `model`, `optimizer`, `lr_scheduler`, `dataloader.train` and `train`;
`dataloader.test` with `dataloader.evaluator` enables evaluation.
"""

import copy
import functools
import logging
import os

import torch

from pgtrain.checkpoint import Checkpointer
from pgtrain.config import LazyConfig, instantiate
from pgtrain.data.preflight import check_datasets
from pgtrain.engine import (
    AMPTrainer,
    BatchSizeLRScalingHook,
    EMAHook,
    EvalHook,
    IterationTimer,
    LRSchedulerHook,
    NonFiniteLossGuard,
    ParamGroupStatsHook,
    PeriodicCheckpointer,
    PeriodicWriter,
    Trainer,
    UnusedParameterCheck,
    apply_grouping_arguments,
    build_run,
    check_output_dir,
    check_run_config,
    collective_timeout,
    compile_for_training,
    default_argument_parser,
    default_setup,
    default_writers,
    launch,
    resolve_device,
    resume_training_state,
    save_config,
    stall_timeout,
    train_preemptibly,
    user_errors_exit,
)
from pgtrain.errors import ConfigError
from pgtrain.evaluation import inference_on_dataset
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


def evaluate(cfg, model, ema=None, which="model"):
    """Evaluates the model, the EMA of its weights (metrics under ``ema/``), or both."""
    results = {}
    if which in ("model", "both") or ema is None:
        results.update(do_test(cfg, model))
    if ema is not None and which in ("ema", "both"):
        results.update({f"ema/{k}": v for k, v in do_test(cfg, ema.model).items()})
    return results


def eval_weights(cfg, resume):
    """Returns the weights --eval-only evaluates: the run's last checkpoint when resuming and
    there is one, else ``train.init_checkpoint``; an untrained model is refused."""
    output_dir = cfg.train.output_dir
    last = Checkpointer(torch.nn.Module(), output_dir).get_checkpoint_file() if resume else ""
    weights = last or cfg.train.get("init_checkpoint") or ""
    if not weights:
        where = f"'{output_dir}' has no checkpoint" if resume else "--resume was not given"
        raise ConfigError(
            f"--eval-only: no trained weights to evaluate ({where} and train.init_checkpoint is "
            "empty); pass --resume with train.output_dir=<a run folder with a checkpoint>, or "
            "train.init_checkpoint=<weights file>"
        )
    return weights


_EVAL_MARKER = "weights.txt"  # names the weights whose results an eval_<stem>/ folder holds


def eval_output_dir(cfg, weights):
    """Returns where --eval-only's evaluator writes: ``<its output_dir>/eval_<weights stem>/``,
    so a run's own results are never overwritten ("" when it writes no files); refuses a folder
    that holds the results of other weights."""
    evaluator = cfg.dataloader.get("evaluator") if "dataloader" in cfg else None
    if evaluator is None or not evaluator.get("output_dir"):
        return ""
    stem = os.path.splitext(os.path.basename(weights.rstrip("/")))[0]
    folder = os.path.join(evaluator.output_dir, f"eval_{stem}")
    marker = os.path.join(folder, _EVAL_MARKER)
    if os.path.exists(marker):
        with open(marker) as f:
            previous = f.read().strip()
        if previous != os.path.abspath(weights):
            raise ConfigError(
                f"--eval-only: '{folder}' holds the results of {previous}, not of {weights}; "
                "pass train.output_dir=<another folder> to keep both"
            )
    return folder


def build_hooks(cfg, run):
    """The default hooks, in the order they run (the comments say why)."""
    train = run.cfg.train  # the run's: lengths and periods in iterations (epochs resolved)
    ema_cfg = dict(train.get("ema") or {})
    ema = EMAHook(**{k: v for k, v in ema_cfg.items() if k not in ("enabled", "evaluate")})
    ema = ema if ema_cfg.get("enabled") else None
    return [
        IterationTimer(),
        NonFiniteLossGuard(),  # after_backward: stops before the optimizer steps on a NaN loss
        UnusedParameterCheck(train.get("unused_params", "warn")),  # after the first backward
        ParamGroupStatsHook(train.param_group_stats_period),  # grads and weights around the step
        LRSchedulerHook(run.scheduler),  # records the LRs this step used, then steps the schedule
        # Rescales LRs for the next step when the batch size changed (after the schedule step).
        BatchSizeLRScalingHook(run.lr_scaling) if train.lr_scaling.dynamic else None,
        ema,  # averages the weights of the step that just ended
        # Saves after the scheduler stepped: the saved state is that of the next iteration.
        PeriodicCheckpointer(run.checkpointer, train.checkpoint.period, max_iter=train.max_iter),
        EvalHook(
            train.eval_period,
            functools.partial(evaluate, cfg, run.model, ema, ema_cfg.get("evaluate", "both")),
        ),
        PeriodicWriter(
            default_writers(
                train.output_dir, train.max_iter, train.iters_per_epoch, run.effective_batch
            ),
            train.log_period,
        ),  # last: this step's eval metrics land too
    ]


def do_train(cfg, resume, notes=()):
    """Builds the run from `cfg` and trains; resumes from the last checkpoint if asked."""
    # The run the tools show too: weights (so `fresh` is known), groups, LR scaling, schedule.
    run = build_run(cfg, resume=resume, with_loader=True, notes=list(notes), parallel=True)
    train = run.cfg.train
    if run.iterations_done >= train.max_iter:  # a finished run: nothing to train
        logger.info(
            "Nothing to train: the run in %s is already finished (at %d/%d); give a larger "
            "train.max_iter (or train.epochs) to train on",
            *(train.output_dir, run.iterations_done, train.max_iter),
        )
        return
    save_config(cfg)  # only now: a run refused above leaves the previous config.yaml as it was
    logger.info("Parameter groups:\n%s", run.table())
    amp = {"precision": train.amp.precision} if train.amp.enabled else {}
    # DDP-wrapped or FSDP-sharded (train.strategy), compiled if train.compile says so
    model = compile_for_training(run.train_model, run.optimizer, train.get("compile"))
    trainer = (AMPTrainer if train.amp.enabled else Trainer)(
        model,
        run.loader,
        run.optimizer,
        accumulation=train.accumulation,
        clip_grad_norm=train.clip_grad_norm,
        **amp,
    )
    trainer.param_group_bases = run.bases()  # saved: a resume says what changed against them
    run.checkpointer.register("trainer", trainer)
    trainer.register_hooks(build_hooks(cfg, run))
    start_iter = resume_training_state(run)  # 0 unless the run resumed
    # Stops cleanly on SIGTERM / SIGUSR1 (exit 128 + signal), names a stalled rank (exit 75).
    train_preemptibly(trainer, start_iter, train.max_iter, stall_timeout=stall_timeout(cfg))


def main(cfg, args):
    """Runs in every process: set up, then train or evaluate."""
    if getattr(args, "config", None):  # a spawned process: the project's registrations
        LazyConfig.import_code(args.config)
    default_setup(cfg, args)
    if getattr(args, "output_dir_note", None):
        logger.warning(args.output_dir_note)
    if args.eval_only:
        weights = eval_weights(cfg, args.resume)
        folder = eval_output_dir(cfg, weights)
        if folder:
            cfg = copy.deepcopy(cfg)  # the caller's config keeps its own output_dir
            cfg.dataloader.evaluator.output_dir = folder
        model = instantiate(cfg.model).to(resolve_device(cfg.train.device))
        Checkpointer(model, cfg.train.output_dir).resume_or_load(
            cfg.train.init_checkpoint, resume=args.resume
        )
        if folder and comm.is_main_process():
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, _EVAL_MARKER), "w") as f:
                f.write(os.path.abspath(weights) + "\n")
        return do_test(cfg, model)
    do_train(cfg, args.resume, getattr(args, "grouping_notes", ()))


def cli(argv=None):
    """Parses the command line (`argv`, default ``sys.argv[1:]``), loads the config (errors
    surface before processes start) and launches the run."""
    args = default_argument_parser().parse_intermixed_args(argv)
    with user_errors_exit():
        cfg = LazyConfig.apply_overrides(LazyConfig.load(args.config), args.opts)
        args.grouping_notes = apply_grouping_arguments(cfg, args)
        check_run_config(cfg)
        check_datasets(cfg)  # every COCO file whole, before the model, processes or folders
        if args.eval_only:  # refused before any process starts
            eval_output_dir(cfg, eval_weights(cfg, args.resume))
        if not args.eval_only and args.machine_rank == 0:  # one machine checks a shared folder
            args.output_dir_note = check_output_dir(
                cfg.train.output_dir, resume=args.resume, overwrite=cfg.train.get("overwrite")
            )
        per_machine = args.num_gpus or args.num_processes
        launch(
            main,
            per_machine,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(cfg, args),
            backend="nccl" if args.num_gpus else "gloo",
            timeout=collective_timeout(cfg, "nccl" if args.num_gpus else "gloo"),
        )


if __name__ == "__main__":
    cli()
