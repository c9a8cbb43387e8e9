#!/usr/bin/env bash
# Run THERE, on the lent GPU machine (after bench/gpu/prepare.sh here), one device call per part:
#   run(command="bash bench/gpu/run.sh sd15", carry=[".whl", ".gpu"], timeout_s=540)
#   run(command="bash bench/gpu/run.sh sdxl", carry=[".whl", ".gpu"], timeout_s=570)
# `all` (the default) runs both in one call: 1035 s of limits, more than one call may take (600 s).
# sd15: the GPU test suite first (tests/gpu, SDXL memory tests aside), then the SD1.5 benchmark; its
#   steps' limits add up to 505 s (the pip install 15 more), within its 540 s on an H200.
# sdxl: W2-XL (832x1216 -> 2x -> SDXL refine, tile 128) beside the naive SDXL img2img baseline, without
#   and with 3 character regions, then under --vram-gb 7 (an 8 GB card), then
#   tests/gpu/test_gpu_sdxl_memory.py on the same 7 GB random model (built once into /tmp/models by the
#   first step: ≈ 1 min), then W2-XL with ControlNet tile without and with 3 regions; limits add up to
#   530 s (+15), within its 570 s.
#   UNet CUDA graphs off for SDXL: compiling its UNet would take minutes of the budget, and 6 tiles of
#   6.8 TFLOP each per call are not launch-bound.
# Everything lands in $OUT as it happens: gpu.log (every line of output, tables included),
# engine.jsonl (one line per bench measurement, appended the moment it is measured: a step killed
# by its limit keeps the ones before), gpu-tests.xml / gpu-tests-sdxl.xml (JUnit), png_bench.json.
# Dry run on a CPU box (the .whl install is skipped where there is no .whl/; the suites skip):
#   PYTHONPATH=$PWD PY=/path/to/venv/python BENCH_ARGS=--small bash bench/gpu/run.sh [sd15|sdxl]
set -uo pipefail
part="${1:-all}"
case "$part" in all|sd15|sdxl) ;; *) echo "usage: run.sh [all|sd15|sdxl]" >&2; exit 2 ;; esac
PY="${PY:-python3}"
if compgen -G ".whl/*.whl" >/dev/null; then
  timeout 15 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 NAIUP_SHARED="${NAIUP_SHARED:-$PWD/.gpu}" NAIUP_BENCH_MODELS=/tmp/models
out="${OUT:-bench/out}"; mkdir -p "$out"; log="$out/gpu.log"; scratch="$(mktemp -d)"
step() { local limit=$1; shift; echo "=== $* (limit ${limit}s)" | tee -a "$log"
         timeout "$limit" "$@" 2>&1 | grep --line-buffered -v Warning | tee -a "$log"; }
# shellcheck disable=SC2086  # BENCH_ARGS is a word list on purpose
bench() { step "$1" "$PY" bench/engine_bench.py --cache /tmp/models --out "$scratch" --jsonl "$out/engine.jsonl" "${@:2}" ${BENCH_ARGS:-}; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee -a "$log"
"$PY" -c 'import torch, diffusers, transformers; print(torch.__version__, diffusers.__version__, transformers.__version__)' | tee -a "$log"
if [ "$part" != sdxl ]; then
  # -v: each test's result is logged as it finishes, so a step killed by its limit still shows which
  # passed (the JUnit report and -q's summary are only written at the end).
  step 145 "$PY" -m pytest tests/gpu -v -rs --durations=8 -p no:cacheprovider --junitxml "$out/gpu-tests.xml" \
    --ignore tests/gpu/test_gpu_sdxl_memory.py
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
fi
if [ "$part" != sd15 ]; then
  # W2-XL beside the naive SDXL img2img, each VAE mode without and with 3 character regions (eager
  # UNet, so one process serves both: the regional prompts' cost); builds the 7 GB model.
  bench 220 --family sdxl --vae-mode exact,auto --regions 0,3 --unet-graphs off
  bench 90 --family sdxl --vae-mode auto --vram-gb 7 --unet-graphs off --no-baseline   # an 8 GB card's budget: the W2-XL peak target
  step 120 "$PY" -m pytest tests/gpu/test_gpu_sdxl_memory.py -v -rs -p no:cacheprovider --junitxml "$out/gpu-tests-sdxl.xml"
  # ControlNet tile (SDXL-shaped, random, built into /tmp/models) beside every (tile, region) UNet
  # call: each row against the first step's auto row with as many regions is the ControlNet's cost.
  bench 100 --family sdxl --vae-mode auto --regions 0,3 --control 0.8 --unet-graphs off --no-baseline
fi
echo "=== done" | tee -a "$log"
