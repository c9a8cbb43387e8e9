#!/usr/bin/env bash
# Run THERE, on the lent GPU machine, in one device call (after bench/gpu/prepare.sh here):
#   run(command="bash bench/gpu/run.sh", carry=[".whl", ".gpu"], timeout_s=540)
# The GPU test suite first (tests/gpu), then the benchmark. Every step has its own time limit, and
# they add up to 505 s (the pip install 15 more), so the whole call fits its 540 s on an H200.
# Everything lands in $OUT as it happens: gpu.log (every line of output, tables included),
# engine.jsonl (one line per bench measurement, appended the moment it is measured: a step killed
# by its limit keeps the ones before), gpu-tests.xml (the suite's JUnit report), png_bench.json.
# Dry run on a CPU box (the .whl install is skipped where there is no .whl/; the suite skips):
#   PYTHONPATH=$PWD PY=/path/to/venv/python BENCH_ARGS=--small bash bench/gpu/run.sh
set -uo pipefail
PY="${PY:-python3}"
if compgen -G ".whl/*.whl" >/dev/null; then
  timeout 15 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 NAIUP_SHARED="${NAIUP_SHARED:-$PWD/.gpu}"
out="${OUT:-bench/out}"; mkdir -p "$out"; log="$out/gpu.log"; scratch="$(mktemp -d)"
step() { local limit=$1; shift; echo "=== $* (limit ${limit}s)" | tee -a "$log"
         timeout "$limit" "$@" 2>&1 | grep --line-buffered -v Warning | tee -a "$log"; }
# shellcheck disable=SC2086  # BENCH_ARGS is a word list on purpose
bench() { step "$1" "$PY" bench/engine_bench.py --cache /tmp/models --out "$scratch" --jsonl "$out/engine.jsonl" "${@:2}" ${BENCH_ARGS:-}; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee -a "$log"
"$PY" -c 'import torch, diffusers, transformers; print(torch.__version__, diffusers.__version__, transformers.__version__)' | tee -a "$log"
# -v: each test's result is logged as it finishes, so a step killed by its limit still shows which
# passed (the JUnit report and -q's summary are only written at the end).
step 145 "$PY" -m pytest tests/gpu -v -rs --durations=8 -p no:cacheprovider --junitxml "$out/gpu-tests.xml"
bench 150 --vae-mode exact,auto                                      # the table, beside the naive baseline; builds the models once
bench 55 --workloads W4 --vae-mode auto --vram-gb 4 --no-baseline   # a 6 GB card's budget: the W4 peak target
bench 50 --vae-mode exact,auto --channels-last --batch 16 --no-baseline  # levers
# NovelAI character regions: W2 without and with 3 characters, eager UNet (a new process would pay
# the graphs' compile again); the ratio is the regional prompts' cost.
bench 30 --workloads W2 --vae-mode auto --regions 0,3 --unet-graphs off --no-baseline
# ControlNet tile: the same two runs with it beside every (tile, region) UNet call, also eager, so
# each row's cost against the row above with the same regions is the ControlNet's.
bench 35 --workloads W2 --vae-mode auto --regions 0,3 --control 0.8 --unet-graphs off --no-baseline
step 25 "$PY" bench/vae_attention_bench.py --latent 416x608 --windows 128,256 --out "$scratch"
step 15 "$PY" bench/png_bench.py --image "$NAIUP_SHARED/fixtures/nai/nai3_1024_text_stealth.png" --out "$out/png_bench.json"
echo "=== done" | tee -a "$log"
