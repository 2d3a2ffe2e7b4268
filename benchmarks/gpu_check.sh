#!/usr/bin/env bash
# The whole CUDA path in one command, for a machine with one GPU (a few minutes):
#   bash benchmarks/gpu_check.sh
# Runs the tests marked `cuda` (AMP bf16 / fp16 steps, a Mask R-CNN and a ViT step, checkpoints
# saved on the GPU and loaded on the CPU and back, a one-process NCCL group with a DDP step,
# train_net --num-gpus 1) and the Mask R-CNN throughput benchmark on CUDA, then prints a summary.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: no CUDA device visible to torch; nothing to check" >&2
    exit 2
fi
"$PY" -c "import torch; print('gpu_check:', torch.cuda.get_device_name(0), 'torch', torch.__version__)"
start=$(date +%s)
"$PY" -m pytest -q -m cuda -rs tests/gpu 2>&1 | tee /tmp/pgtrain_gpu_tests.log
tests_status=${PIPESTATUS[0]}
"$PY" benchmarks/maskrcnn_throughput.py --device cuda --iters 20 --warmup 5 --repeats 3 2>&1 \
    | tee /tmp/pgtrain_gpu_bench.log
bench_status=${PIPESTATUS[0]}
echo
echo "gpu_check summary ($(( $(date +%s) - start )) s):"
echo "  tests:     $(tail -n 1 /tmp/pgtrain_gpu_tests.log) (exit $tests_status)"
echo "  benchmark: $(tail -n 1 /tmp/pgtrain_gpu_bench.log) (exit $bench_status)"
exit $(( tests_status != 0 || bench_status != 0 ))
