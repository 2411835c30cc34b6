#!/usr/bin/env bash
# One GPU check, under 5 minutes on an H100: the golden fixtures on CUDA (fp32, bf16, fp16 tolerances), then our
# models against transformers 5.23 eager at batch 1/8/32 in fp32 and bf16, in the same run.
#
#   bash benchmarks/gpu_check.sh            # prints the results; copy the table into docs/benchmarks.md
#
# Needs a CUDA torch (any recent one) plus transformers==5.23.0, safetensors, huggingface_hub, numpy, pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
$PY - <<'PY'
import torch, transformers
assert torch.cuda.is_available(), "no CUDA device"
print("device:", torch.cuda.get_device_name(), "| torch", torch.__version__, "| transformers", transformers.__version__)
PY
VIDEOPRISM_TEST_DEVICE=cuda timeout 120 $PY -m pytest -q -p no:cacheprovider tests/test_golden.py
timeout 160 $PY benchmarks/bench_models.py --device cuda --batches 1 8 32 --rounds 1 --iters 3 --skip-transformers-bf16
