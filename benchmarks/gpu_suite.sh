#!/usr/bin/env bash
# The GPU benchmarks of the README's performance table, in one go: each prints one JSON line, also
# written to OUT_DIR/<name>.json. Usage: benchmarks/gpu_suite.sh OUT_DIR
set -uo pipefail
out="${1:-/tmp/jpg_gpu_bench}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.5   # leave PyTorch room in the same process
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$out/gpu.csv"
bench() {  # name, time limit (s), script and arguments
  local name="$1" limit="$2"; shift 2
  echo "== $name: $*"
  timeout "$limit" python3 "$@" 2> "$out/$name.err" | tee "$out/$name.json"
  tail -3 "$out/$name.err"
}
bench train_step_f32 170 benchmarks/train_step.py --runs 10 --warmup 2
bench decode_f32 100 benchmarks/decode.py --runs 5
bench train_step_f32_remat 170 benchmarks/train_step.py --runs 10 --warmup 2 --remat nothing_saveable
bench train_step_bf16 200 benchmarks/train_step.py --dtype bfloat16 --extractor all --runs 10 --warmup 2
bench decode_bf16 80 benchmarks/decode.py --dtype bfloat16 --runs 5
bench decode_r2gen 80 benchmarks/decode.py --framework jax --variant r2gen --runs 5   # Table 2's baselines
bench decode_cmn 80 benchmarks/decode.py --framework jax --variant cmn --runs 5
bench compile_time 300 benchmarks/compile_time.py   # the paper's programs, cold and from the compilation cache
