#!/usr/bin/env bash
# One GPU check (5.8 minutes on an H100 with --iters 10, mostly per-shape Triton compiles; --iters 5 now): the
# golden fixtures on CUDA (fp32 exact tolerances, bf16/fp16 cosine), then our models against transformers 5.23 eager
# at batch 1/8/32 in fp32 and bf16, in one process (eager attention vs our default vs torch.compile'd; peak GPU
# memory per variant).
#
#   bash benchmarks/gpu_check.sh [LOG_DIR]   # prints the table to copy into docs/benchmarks.md; logs in LOG_DIR
#
# Needs a CUDA torch (any recent one) plus transformers==5.23.0, safetensors, huggingface_hub, numpy, pytest, av.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
LOGS=${1:-$(mktemp -d)}
mkdir -p "$LOGS"
status=0

$PY - <<'PY' || exit 1
import torch, transformers
assert torch.cuda.is_available(), "no CUDA device"
print("device:", torch.cuda.get_device_name(), "| torch", torch.__version__, "| CUDA", torch.version.cuda,
      "| transformers", transformers.__version__)
PY
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,power.limit --format=csv || true

VIDEOPRISM_TEST_DEVICE=cuda timeout 150 $PY -m pytest -q -p no:cacheprovider tests/test_golden.py 2>&1 \
    | tee "$LOGS/golden.log" || status=1
timeout 270 $PY benchmarks/bench_models.py --device cuda --batches 1 8 32 --iters 5 --compile 2>&1 \
    | tee "$LOGS/bench.log" || status=1
exit $status
