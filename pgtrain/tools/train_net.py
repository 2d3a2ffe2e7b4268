"""Train (or evaluate) any pgtrain config.

    python tools/train_net.py --config configs/quick/toy.py train.max_iter=200
    python tools/train_net.py --config configs/quick/toy.py --resume
    python tools/train_net.py --config configs/quick/toy.py --num-processes 2   # CPU, gloo
    python tools/train_net.py --config configs/quick/toy.py --eval-only --resume

The config provides `model`, `optimizer`, `lr_scheduler`, `dataloader.train` and `train`;
`dataloader.test` with `dataloader.evaluator` enables evaluation, and `hooks` (a list of
LazyCall hooks) adds the config's own hooks to the built-in ones.
"""

import logging

from pgtrain.config import LazyConfig
from pgtrain.engine import (
    AMPTrainer,
    Strategy,
    Trainer,
    build_run,
    compile_for_training,
    default_argument_parser,
    default_hooks,
    default_setup,
    launch,
    prepare_run,
    resume_training_state,
    save_config,
    train_preemptibly,
    user_errors_exit,
)
from pgtrain.engine.run.evaluate import eval_output_dir, eval_weights, evaluate, evaluate_weights

logger = logging.getLogger("pgtrain.train_net")


def do_train(cfg, resume, notes=()):
    """Builds the run from `cfg` and trains; resumes from the last checkpoint if asked."""
    # The run the tools show too: weights (so `fresh` is known), groups, LR scaling, schedule,
    # and the strategy (DDP or FSDP) applied to the model it trains.
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
    model = compile_for_training(run.train_model, run.optimizer, train.get("compile"))
    trainer = (AMPTrainer if train.amp.enabled else Trainer)(
        model,
        run.loader,
        run.optimizer,
        accumulation=train.accumulation,
        clip_grad_norm=train.clip_grad_norm,
        strategy=run.strategy,
        **amp,
    )
    trainer.param_group_bases = run.bases()  # saved: a resume says what changed against them
    run.checkpointer.register("trainer", trainer)
    trainer.register_hooks(default_hooks(run, evaluate))
    start_iter = resume_training_state(run)  # 0 unless the run resumed
    # Stops cleanly on SIGTERM / SIGUSR1 (exit 128 + signal), names a stalled rank (exit 75).
    stall = run.strategy.stall_timeout()
    train_preemptibly(trainer, start_iter, train.max_iter, stall_timeout=stall)


def main(cfg, args, notes=(), warnings=()):
    """Runs in every process: set up, then train or evaluate (`notes` and `warnings`: those of
    `prepare_run`)."""
    if getattr(args, "config", None):  # a spawned process: the project's registrations
        LazyConfig.import_code(args.config)
    default_setup(cfg)
    for warning in warnings:
        logger.warning(warning)
    if args.eval_only:
        return evaluate_weights(cfg, args.resume)
    do_train(cfg, args.resume, notes)


def cli(argv=None):
    """Parses the command line (`argv`, default ``sys.argv[1:]``), loads and checks the config
    (errors surface before processes start) and launches the run."""
    args = default_argument_parser().parse_intermixed_args(argv)
    with user_errors_exit():
        # One machine checks a shared output folder; --eval-only writes into eval_<weights>/.
        new_run = not args.eval_only and args.machine_rank == 0
        request = prepare_run(args, datasets=True, new_run=new_run)
        if args.eval_only:  # refused before any process starts
            eval_output_dir(request.cfg, eval_weights(request.cfg, args.resume))
        backend = Strategy.backend(args.num_gpus)
        launch(
            main,
            args.num_gpus or args.num_processes,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(request.cfg, args, request.notes, request.warnings),
            backend=backend,
            timeout=Strategy.from_train(request.cfg.train).timeout(backend),
        )


if __name__ == "__main__":
    cli()
