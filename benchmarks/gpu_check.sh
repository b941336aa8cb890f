#!/usr/bin/env bash
# One-shot GPU check (under 8 minutes on a CUDA machine): the GPU tests, then a torch-CUDA fp32/fp16/bf16 bench
# of two zoo models on short-trained weights. Writes everything under ${OUT:-gpu-check}/ and prints it.
#   bash benchmarks/gpu_check.sh            # from the repository root, with segedge installed ([test] extra)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check}
PY=${PY:-python}
mkdir -p "$OUT"
{
  echo "# GPU check $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv 2>&1 || echo "nvidia-smi: none"
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
  $PY -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())"
} 2>&1 | tee "$OUT/machine.txt"
# the tests that need a GPU (they skip elsewhere): TensorRT, CUDA runners, the torch-cuda backend
timeout 240 $PY -m pytest -q -rs tests/backends/test_tensorrt.py tests/backends/test_runners.py tests/backends/test_backends.py 2>&1 | tail -25 | tee "$OUT/tests.txt"
export SEGEDGE_CACHE="$PWD/$OUT/cache"
for model in ddrnet23slim bisenet; do
  timeout 150 $PY -m segedge train --model "$model" --iterations 60 --quiet --out "$OUT/$model.pt" 2>&1 | tail -2
done
timeout 200 $PY -m segedge bench --profile torch-gpu --models ddrnet23slim,bisenet \
  --checkpoint "ddrnet23slim=$OUT/ddrnet23slim.pt" --checkpoint "bisenet=$OUT/bisenet.pt" \
  --precisions fp32,fp16,bf16 --results "$OUT/results.sqlite" --out "$OUT/export" --quiet 2>&1 | tee "$OUT/bench.txt"
echo "written: $OUT/machine.txt $OUT/tests.txt $OUT/bench.txt $OUT/results.sqlite"
