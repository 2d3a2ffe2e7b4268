"""Training-loop settings shared by every config: `from configs.common.train import train`."""

train = dict(
    output_dir="./output",
    # A new run refuses a folder that holds another run's checkpoints (continue it with
    # --resume); True moves that run's files into output_dir/replaced_<time>/ first.
    overwrite=False,
    init_checkpoint="",  # weights to start from (path or URL); fresh parameters are reported
    # Globs of init_checkpoint's keys to leave out, e.g. ["head.*"] to train a new classifier
    # head of the same shape; their parameters count as fresh (a `fresh` rule selects them).
    init_checkpoint_exclude=[],
    # Initial weights that provide less of the model's parameters than this warn loudly; none
    # at all is an error (a checkpoint of another model).
    init_checkpoint_min_fraction=0.5,
    # The run's length: max_iter optimizer steps, or (max_iter=None) epochs passes over the
    # train dataset; exactly one is set. Eval and checkpoint periods take iterations or "2ep".
    max_iter=1000,
    epochs=None,
    iters_per_epoch=None,  # set by the run from the train dataset's length and the batch
    device="auto",  # "auto": CUDA when available, else CPU
    seed=0,  # each rank seeds with seed + rank; a negative seed draws one at random
    amp=dict(enabled=False, precision="bf16"),  # bf16 on CPU or CUDA; fp16 (+ GradScaler) on CUDA
    accumulation=1,  # micro-batches per optimizer step
    clip_grad_norm=None,  # e.g. 1.0: clip gradients to this global L2 norm
    # format: "file" (one .pth, written by rank 0), "sharded" (a .dcp folder every process writes
    # its shards into), "auto" (sharded under FSDP); either loads into any run.
    checkpoint=dict(period=500, keep_last=3, format="auto"),
    eval_period=500,  # 0: evaluate only at the end
    log_period=20,
    param_group_stats_period=100,  # per-group grad norm, weight norm, update ratio; 0: off
    # Trainable parameters that get no gradient in the first iteration (an unused branch):
    # "warn" lists them once, "error" stops the run, "off" does not check.
    unused_params="warn",
    # Batch-size LR scaling: the config's LRs are tuned for reference_batch; the run's effective
    # batch (per-process batch x processes x accumulation) scales them by rule ("linear" or
    # "sqrt"), once at start; dynamic=True also rescales whenever the batch size changes.
    lr_scaling=dict(reference_batch=None, rule="linear", dynamic=False),
    # torch.compile of the model and, separately, of the optimizer step (one compile for all
    # groups: their LRs become tensors the schedule updates in place, so it never recompiles).
    compile=dict(model=False, optimizer=False, backend="inductor", mode=None),
    # An exponential moving average of the weights (updated every `period` steps, the decay
    # warming up to `decay`; buffers "average" or "copy"; device None: the model's), saved in
    # the checkpoints; evaluate "model", "ema" (metrics under ema/) or "both".
    ema=dict(
        enabled=False,
        decay=0.9998,
        warmup=True,
        period=1,
        buffers="average",
        device=None,
        evaluate="both",
    ),
    # How the processes share the model: "ddp" replicates it (train.ddp options), "fsdp" shards
    # parameters, gradients and optimizer state (FSDP2) with one unit per module train.fsdp.shard
    # names (class names such as "Block", or globs of module names such as "backbone.blocks.*"),
    # computing in param_dtype ("bf16", "fp16", null: the parameters' own) and reducing in
    # reduce_dtype. The param groups are the same under both.
    strategy="ddp",
    ddp=dict(find_unused_parameters=False, fp16_compression=False),
    fsdp=dict(shard=[], reshard_after_forward=True, param_dtype=None, reduce_dtype=None),
    # Seconds a collective waits for the other ranks (None: 600 on gloo, 1800 on NCCL); a rank
    # silent for half of it (at most 60 s) is named in the log and the job exits (status 75).
    dist_timeout_s=None,
)
