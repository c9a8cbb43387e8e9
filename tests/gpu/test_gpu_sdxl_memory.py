"""SDXL on an 8 GB card's budget (model.max_vram_gb = 7), with real SDXL shapes (random weights) and the
real allocator cap: the text encoders wait in host RAM, W2-XL (2x of 832x1216, tile 128) with a character
region refines at the first try, a CFG job after it joins its embeddings with the ones cached by the
first (all on the GPU, whichever way the encoders ran), and a cap too small for the UNet and one tile
is refused at load, saying what it needs.

The 7 GB model folder is bench/bench_models.py's, built once into NAIUP_BENCH_MODELS (bench/gpu/run.sh
shares it with the benchmark) or into a temp folder. Marked `gpu`: skipped without CUDA.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from naiup.config import ModelConfig, Preset
from naiup.engine.device import cap_memory
from naiup.engine.diffusion.refine import Refiner
from naiup.engine.image_prompts import Region
from naiup.errors import ModelLoadError

GiB = 2**30
REPO = Path(__file__).resolve().parents[2]
# W2-XL's refine: LCM 8 steps x denoise 0.25 = 2 UNet steps at CFG 1, SDXL's 128-latent tiles.
W2_XL = Preset(name="w2-xl", steps=8, denoise=0.25, cfg=1.0, sampler="lcm", tile_size=128, overlap=16)
# One character on the left: its (tile, region) samples beside the background's; at CFG 1 the regions
# still pad with the empty prompt, which must be encoded inside the text encoders' visit.
CHARACTER = (Region("1girl, red hair, smile", "", (0.3, 0.45), 0.5),)
# Then a job with CFG and a negative longer than one 75-token chunk: the prompt is padded with the
# empty prompt's embedding cached by the job before.
LONG_NEGATIVE = ", ".join(["lowres", "bad hands", "blurry", "jpeg artifacts"] * 12)
CFG_JOB = replace(W2_XL, name="xl-cfg", cfg=2.0, sampler="euler")


@pytest.fixture(scope="module")
def xl_folder(tmp_path_factory) -> Path:
    sys.path.insert(0, str(REPO / "bench"))
    from bench_models import FULL_XL, sdxl_folder

    cache = os.environ.get("NAIUP_BENCH_MODELS")
    folder = sdxl_folder(FULL_XL, Path(cache) if cache else tmp_path_factory.mktemp("models"))
    _release_cached_memory()  # the build's blocks (~15 GB) must not stay in this process's cache
    return folder


def _release_cached_memory() -> None:
    """Give back what torch caches: blocks already reserved do not count against a cap set later, so
    with them the cap would not behave like an 8 GB card."""
    gc.collect()
    torch.cuda.empty_cache()


def _cached_devices(refiner: Refiner) -> set[torch.device]:
    """Where the prompt embeddings the refiner cached live (context and pooled of each)."""
    cache = refiner._encoder._cache  # type: ignore[union-attr]
    assert cache, "no prompt was encoded"
    return {t.device for c in cache.values() for t in (c.context, c.pooled)}


def _config(folder: Path, cap_gib: float) -> ModelConfig:
    return ModelConfig(
        checkpoint=str(folder), lcm_lora="", device="cuda", max_vram_gb=cap_gib, unet_graphs="off"
    )


def _w2_xl_image() -> Image.Image:
    g = np.random.default_rng(0)
    small = g.integers(0, 256, (38, 26, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((1664, 2432), Image.BICUBIC)  # upscaled-looking, smooth


def test_w2_xl_refines_within_max_vram_gb_7_with_the_text_encoders_in_host_ram(xl_folder, cuda, caplog):
    caplog.set_level(logging.INFO, logger="naiup.engine")
    _release_cached_memory()
    reserved = torch.cuda.memory_reserved(cuda)
    assert reserved < 2 * GiB, f"{reserved / GiB:.1f} GiB cached before the cap: it would not bind"
    cap_memory(cuda, 7 * GiB)  # what Engine does with model.max_vram_gb = 7
    try:
        refiner = Refiner(_config(xl_folder, 7), cuda)
        refiner.load()
        m = refiner.models
        assert m.family == "sdxl" and not refiner.residency.text_encoders_resident
        assert m.text_encoder.device.type == m.text_encoder_2.device.type == "cpu"
        assert m.unet.device == m.vae.device == cuda
        assert m.vae.dtype in (torch.bfloat16, torch.float32)  # never fp16 for the SDXL VAE
        # Where each text encoder call ran: observed, not changed (a forward pre-hook).
        ran_on: set[torch.device] = set()
        for te in (m.text_encoder, m.text_encoder_2):
            te.register_forward_pre_hook(lambda module, _: ran_on.add(next(module.parameters()).device))
        torch.cuda.reset_peak_memory_stats(cuda)
        out = refiner.refine(
            _w2_xl_image(), W2_XL, prompt="park", negative_prompt="", seed=1, regions=CHARACTER
        )
        peak = torch.cuda.max_memory_allocated(cuda)
        # Every text, the empty prompt the regions pad with included, was encoded during the
        # encoders' visit to the GPU (none on the CPU, slowly), and is cached on the GPU.
        assert ran_on == {cuda} and "" in refiner._encoder._cache  # type: ignore[union-attr]
        assert _cached_devices(refiner) == {cuda}
        # 768 px: 96-latent tiles, whose CFG pair fits the cap beside the UNet (128 with CFG would
        # not, and is refused for the preset: residency.plan_residency).
        small = _w2_xl_image().resize((768, 768))
        cfg_out = refiner.refine(small, CFG_JOB, prompt="park", negative_prompt=LONG_NEGATIVE, seed=2)
        assert _cached_devices(refiner) == {cuda} and ran_on == {cuda}
    finally:
        cap_memory(cuda, 0)
    assert out.size == (1664, 2432) and cfg_out.size == (768, 768)
    assert "refine out of memory" not in caplog.text  # it fit at the first rung: no retry ladder
    assert peak <= 7 * GiB, f"peak {peak / GiB:.2f} GiB"  # (the bench's --vram-gb 7 run records it)
    # The encoders went back to host RAM after encoding; the UNet and VAE stayed.
    assert m.text_encoder_2.device.type == "cpu" and m.unet.device == cuda
    del refiner, m
    _release_cached_memory()


def test_a_cap_below_the_sdxl_unet_and_one_tile_is_refused_at_load_with_what_it_needs(xl_folder, cuda):
    before = torch.cuda.memory_allocated(cuda)
    cap_memory(cuda, 5 * GiB)
    try:
        with pytest.raises(
            ModelLoadError, match=r"needs about 6\.\d GB of GPU memory .* use an SD1\.5 preset"
        ):
            Refiner(_config(xl_folder, 5), cuda).load()
    finally:
        cap_memory(cuda, 0)
    # Refused from the sizes, in host RAM: nothing was sent to the GPU to find out.
    assert torch.cuda.memory_allocated(cuda) <= before + 64 * 2**20
