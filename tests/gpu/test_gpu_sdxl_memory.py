"""SDXL on an 8 GB card's budget (model.max_vram_gb = 7), with real SDXL shapes (random weights) and the
real allocator cap: the text encoders wait in host RAM, W2-XL (2x of 832x1216, tile 128) refines at the
first try, and a cap too small for the UNet and one tile is refused at load, saying what it needs.

The 7 GB model folder is bench/bench_models.py's, built once into NAIUP_BENCH_MODELS (bench/gpu/run.sh
shares it with the benchmark) or into a temp folder. Marked `gpu`: skipped without CUDA.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from naiup.config import ModelConfig, Preset
from naiup.engine.device import cap_memory
from naiup.engine.diffusion.refine import Refiner
from naiup.errors import ModelLoadError

GiB = 2**30
REPO = Path(__file__).resolve().parents[2]
# W2-XL's refine: LCM 8 steps x denoise 0.25 = 2 UNet steps at CFG 1, SDXL's 128-latent tiles.
W2_XL = Preset(name="w2-xl", steps=8, denoise=0.25, cfg=1.0, sampler="lcm", tile_size=128, overlap=16)


@pytest.fixture(scope="module")
def xl_folder(tmp_path_factory) -> Path:
    sys.path.insert(0, str(REPO / "bench"))
    from bench_models import FULL_XL, sdxl_folder

    cache = os.environ.get("NAIUP_BENCH_MODELS")
    return sdxl_folder(FULL_XL, Path(cache) if cache else tmp_path_factory.mktemp("models"))


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
    cap_memory(cuda, 7 * GiB)  # what Engine does with model.max_vram_gb = 7
    try:
        refiner = Refiner(_config(xl_folder, 7), cuda)
        refiner.load()
        m = refiner.models
        assert m.family == "sdxl" and not refiner.residency.text_encoders_resident
        assert m.text_encoder.device.type == m.text_encoder_2.device.type == "cpu"
        assert m.unet.device == m.vae.device == cuda
        assert m.vae.dtype in (torch.bfloat16, torch.float32)  # never fp16 for the SDXL VAE
        torch.cuda.reset_peak_memory_stats(cuda)
        out = refiner.refine(_w2_xl_image(), W2_XL, prompt="1girl, solo", negative_prompt="", seed=1)
        peak = torch.cuda.max_memory_allocated(cuda)
    finally:
        cap_memory(cuda, 0)
    assert out.size == (1664, 2432)
    assert "refine out of memory" not in caplog.text  # it fit at the first rung: no retry ladder
    assert peak <= 7 * GiB, f"peak {peak / GiB:.2f} GiB"  # (the bench's --vram-gb 7 run records it)
    # The encoders went back to host RAM after encoding; the UNet and VAE stayed.
    assert m.text_encoder_2.device.type == "cpu" and m.unet.device == cuda
    del refiner, m
    torch.cuda.empty_cache()


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
