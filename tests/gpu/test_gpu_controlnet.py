"""ControlNet tile on CUDA: placed on the device in the UNet's dtype, and the tiled refine with per-tile
crops gives the CPU result within the fp16/bf16 tolerance."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import tiny_controlnet
import tiny_sd
import torch
from PIL import Image

from naiup.config import ModelConfig, Preset
from naiup.engine.diffusion.refine import Refiner
from naiup.engine.models.residency import Residency

# 96x96 px -> 12x12 latent; 8-latent tiles overlapping by 4 -> 2x2 tiles, 3 per UNet call (one padded
# batch); the ControlNet runs on the first 3 of 4 steps.
TILED = Preset(
    name="t", steps=8, denoise=0.5, tile_size=8, overlap=4, tile_batch_size=3, vae_tiling="exact",
    control_strength=0.8, control_end=0.75,
)  # fmt: skip


def _refine(refiner: Refiner) -> np.ndarray:
    y, x = np.mgrid[0:96, 0:96]
    image = Image.fromarray(np.stack([x * 2, y * 2, (x + y)], axis=-1).astype(np.uint8), "RGB")
    out = refiner.refine(image, TILED, prompt="1girl", negative_prompt="", seed=7)
    return np.asarray(out, dtype=np.float64)


@pytest.fixture(scope="module")
def cpu_config(tmp_path_factory) -> ModelConfig:
    cn = tiny_controlnet.session_tiny_controlnets(tmp_path_factory).sd15
    return replace(tiny_sd.cpu_config(tmp_path_factory), controlnet=str(cn.folder))


def test_the_controlled_refine_on_cuda_equals_the_cpu_result(cpu_config, cuda):
    # Graphs on: the UNet calls with and without the ControlNet's residuals are two graphs.
    refiner = Refiner(replace(cpu_config, device="cuda", unet_graphs="on"))
    refiner.load()
    net = refiner.models.controlnet
    assert next(net.parameters()).device == refiner.device and net.dtype == torch.float16
    ours = _refine(refiner)
    cpu = _refine(Refiner(cpu_config))
    psnr = float(10 * np.log10(255**2 / max(float(np.mean((ours - cpu) ** 2)), 1e-12)))
    # The tolerance of tests/gpu/test_gpu_refine.py (fp16 UNet and ControlNet, bf16 VAE against fp32):
    # a hint crop on the wrong device or misaligned with its tile gives noise, far below it.
    assert psnr > 40, f"CUDA result drifts from the CPU one: PSNR {psnr:.1f} dB"
    # A compiled UNet that failed on the residual keywords would have fallen back to eager silently.
    assert refiner.unet_graphs, "the ControlNet's residuals made the compiled UNet fall back to eager"
    # Still wholly on the device after the job (the VAE passes may park it with the UNet).
    assert all(p.device == refiner.device for p in net.parameters())


def test_a_controlnet_waiting_in_host_ram_is_brought_in_by_the_job_that_runs_it(cpu_config, cuda):
    refiner = Refiner(replace(cpu_config, device="cuda", unet_graphs="off"))
    refiner.load()
    net = refiner.models.controlnet
    # Where a job that does not run it leaves it on a card without room for it beside the rest.
    refiner._placement.settle(Residency(controlnet_resident=False))  # type: ignore[union-attr]
    assert next(net.parameters()).device.type == "cpu" and net.dtype == torch.float16  # kept fp16
    # The next job runs it: its plan has it on the device, moved in before the first UNet call (left
    # in host RAM, the call fails: "Expected all tensors to be on the same device").
    _refine(refiner)
    assert all(p.device == refiner.device for p in net.parameters()) and refiner.residency.controlnet_resident
