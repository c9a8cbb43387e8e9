"""NovelAI character regions on CUDA, alone and with the ControlNet tile: every (tile, region) sample
indexes its region's prompt (and its tile's hint crop) on the device, and the result is the CPU one
within the fp16/bf16 tolerance."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import tiny_controlnet
import tiny_sd
from PIL import Image

from naiup.config import ModelConfig, Preset
from naiup.engine.diffusion.refine import Refiner
from naiup.engine.image_prompts import Region

# 96x96 px -> 12x12 latent; 8-latent tiles overlapping by 4 -> 2x2 tiles. The characters overlap
# each other and some tiles, so calls mix regions and a tile runs several prompts; 4 steps.
REGIONS = (
    Region("1girl, red hair", "bad hands", (0.3, 0.5), 0.5),
    Region("1boy, blue hair", "", (0.75, 0.4), 0.4),
)
ALONE = Preset(
    name="t", steps=8, denoise=0.5, cfg=1.5, tile_size=8, overlap=4, tile_batch_size=3, vae_tiling="exact"
)
CONTROLLED = replace(ALONE, control_strength=0.8, control_end=0.75)


def _refine(refiner: Refiner, preset: Preset) -> np.ndarray:
    y, x = np.mgrid[0:96, 0:96]
    image = Image.fromarray(np.stack([x * 2, y * 2, (x + y)], axis=-1).astype(np.uint8), "RGB")
    out = refiner.refine(image, preset, prompt="park", negative_prompt="lowres", seed=7, regions=REGIONS)
    return np.asarray(out, dtype=np.float64)


@pytest.fixture(scope="module")
def cpu_config(tmp_path_factory) -> ModelConfig:
    cn = tiny_controlnet.session_tiny_controlnets(tmp_path_factory).sd15
    return replace(tiny_sd.cpu_config(tmp_path_factory), controlnet=str(cn.folder))


@pytest.fixture(scope="module")
def refiners(cpu_config, cuda) -> tuple[Refiner, Refiner]:
    # Eager UNet: graphs with the ControlNet's residuals are test_gpu_controlnet.py's, and the region
    # index is applied outside the UNet call, so compiling here would only add its minutes.
    on_cuda = Refiner(replace(cpu_config, device="cuda", unet_graphs="off"))
    on_cuda.load()
    return on_cuda, Refiner(cpu_config)


@pytest.mark.parametrize("preset", [ALONE, CONTROLLED], ids=["regions", "regions+controlnet"])
def test_the_regional_refine_on_cuda_equals_the_cpu_result(refiners, preset, cuda):
    on_cuda, on_cpu = refiners
    assert on_cuda.device == cuda
    ours, cpu = _refine(on_cuda, preset), _refine(on_cpu, preset)
    psnr = float(10 * np.log10(255**2 / max(float(np.mean((ours - cpu) ** 2)), 1e-12)))
    # The tolerance of tests/gpu/test_gpu_refine.py (fp16 UNet and ControlNet, bf16 VAE against fp32):
    # a sample given another region's prompt or another tile's hint crop is far below it.
    assert psnr > 40, f"CUDA result drifts from the CPU one: PSNR {psnr:.1f} dB"
