#!/usr/bin/env bash
# One GPU check, about 6 minutes: the golden fixtures on CUDA (fp32 exact tolerances, bf16/fp16 cosine), then our
# models against transformers 5.23 eager in one process: the LvT-B clip model at batch 1 and 32, base vision at
# batch 1 and 32, fp32 and bf16 (eager attention, our default "auto", flex, torch.compile'd bf16; peak GPU memory per
# variant), and a kernel profile of our bf16 default at batch 32.
#
#   bash benchmarks/gpu_check.sh [LOG_DIR]   # prints the tables to copy into docs/benchmarks.md; logs in LOG_DIR
#
# Needs a CUDA torch (any recent one) plus transformers==5.23.0, safetensors, huggingface_hub, numpy, pytest. Wheels
# in .whl/ (a machine without a network) are installed into /tmp/site first.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
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
nproc

VIDEOPRISM_TEST_DEVICE=cuda timeout 120 $PY -m pytest -q -p no:cacheprovider tests/test_golden.py 2>&1 \
    | tee "$LOGS/golden.log" || status=1
timeout "${BENCH_TIMEOUT:-400}" $PY benchmarks/bench_models.py --device cuda --kinds clip vision --batches 1 32 \
    --clip-batches 1 32 --iters 5 --compile --profile 2>&1 | tee "$LOGS/bench.log" || status=1
exit $status
