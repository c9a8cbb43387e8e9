#!/usr/bin/env bash
# Run HERE, from the repository root, before the device call: fetches the wheels the GPU image lacks
# (diffusers, spandrel, platformdirs, importlib_metadata; watchdog and cryptography with cffi and
# pycparser for the daemon and NovelAI-signature tests of tests/gpu) into .whl/, and copies the
# upscaler weights and one NovelAI fixture from ../shared into .gpu/ (../shared does not travel),
# laid out as ../shared is (NAIUP_SHARED=.gpu there). Both folders are git-ignored through
# .git/info/exclude and travel with `carry: [".whl", ".gpu"]`.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
shared="${NAIUP_SHARED:-../shared}"
exclude="$(git rev-parse --git-path info/exclude)"; mkdir -p "$(dirname "$exclude")"; touch "$exclude"
for d in /.whl/ /.gpu/; do grep -qxF "$d" "$exclude" || echo "$d" >> "$exclude"; done
rm -rf .whl .gpu && mkdir -p .whl .gpu/weights .gpu/fixtures/nai
python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl diffusers==0.42.1 spandrel==0.4.2 platformdirs==4.14.8 importlib_metadata==8.7.0 \
  watchdog==6.0.0 cryptography==46.0.3 cffi==2.0.0 pycparser==2.23
for w in realcugan-se-2x/realcugan-se-up2x-conservative.safetensors \
         realesrgan-x4plus-anime-6b/RealESRGAN_x4plus_anime_6B.safetensors; do
  mkdir -p ".gpu/weights/$(dirname "$w")" && cp "$shared/weights/$w" ".gpu/weights/$w"
done
cp "$shared/fixtures/nai/nai3_1024_text_stealth.png" .gpu/fixtures/nai/
du -sh .whl .gpu
