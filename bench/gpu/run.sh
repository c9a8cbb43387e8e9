#!/usr/bin/env bash
# Run THERE, on the lent GPU machine, in one device call (after bench/gpu/prepare.sh here):
#   run(command="bash bench/gpu/run.sh", carry=[".whl", ".gpu"], timeout_s=600)
# Every step has its own time limit so the whole stays under 550 s and what finished comes back in
# $OUT: engine-*.json per bench invocation, png_bench.json, and gpu.log with every table.
# Dry run on a CPU box: PY=/path/to/venv/python BENCH_ARGS=--small bash bench/gpu/run.sh
set -uo pipefail
PY="${PY:-python3}"
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 NAIUP_SHARED="$PWD/.gpu"
out="${OUT:-bench/out}"; mkdir -p "$out"; log="$out/gpu.log"
step() { local limit=$1; shift; echo "=== $* (limit ${limit}s)" | tee -a "$log"
         timeout "$limit" "$@" 2>&1 | grep --line-buffered -v Warning | tee -a "$log"; }
# shellcheck disable=SC2086  # BENCH_ARGS is a word list on purpose
bench() { step "$1" "$PY" bench/engine_bench.py --cache /tmp/models --out "$out" "${@:2}" ${BENCH_ARGS:-}; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee -a "$log"
"$PY" -c 'import torch, diffusers, transformers; print(torch.__version__, diffusers.__version__, transformers.__version__)' | tee -a "$log"
bench 240 --vae-mode off,exact,low-memory,auto                       # the table; builds the models once
bench 70 --workloads W4 --vae-mode low-memory,auto --vram-gb 4 --no-baseline   # a 6 GB card's budget
bench 70 --workloads W4 --vae-mode auto,exact --attention-window 0 --no-baseline  # whole VAE attention
bench 70 --vae-mode exact,auto --channels-last --batch 16 --no-baseline        # levers
step 50 "$PY" bench/vae_attention_bench.py --latent 416x608 --windows 128,256 --out "$out"
step 30 "$PY" bench/png_bench.py --image .gpu/fixture.png --out "$out/png_bench.json"
echo "=== done" | tee -a "$log"
