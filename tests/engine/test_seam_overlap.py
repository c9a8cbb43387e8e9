"""The overlap default comes from a seam measurement (bench/seam_bench.py): on the tiny model, Mixture
of Diffusers with a quarter-tile overlap (16 of 64 latent px) leaves no more seam than half a tile
(32), while an eighth (8) does. Scaled down 4x here: tile 16, overlaps 2 / 4 / 8."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import tiny_sd
import torch
from diffusers import UNet2DConditionModel

from naiup.config import Preset
from naiup.engine.diffusion.refine import denoise, make_guided_denoiser
from naiup.engine.diffusion.samplers import Sampler
from naiup.engine.diffusion.tiling import plan_tiles, tiled_predictor

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from seam_bench import seam_lines, seam_ratio, smooth_latent

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_seam_metric_sees_a_step_on_a_tile_border_and_nothing_in_smooth_noise():
    plan = plan_tiles(44, 72, 16, 4)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(1, 4, 44, 72, generator=g)
    assert 0.9 < seam_ratio(noise, plan) < 1.1
    stepped = noise.clone()
    for x in seam_lines(plan.starts_x, plan.tile_w, plan.latent_w):
        stepped[..., x:] += 4.0  # a step across every seam column and row
    for y in seam_lines(plan.starts_y, plan.tile_h, plan.latent_h):
        stepped[..., y:, :] += 4.0
    assert seam_ratio(stepped, plan) > 2.0


def test_default_overlap_is_a_quarter_of_the_tile():
    preset = Preset(name="defaults")
    assert preset.overlap * 4 == preset.tile_size


@torch.no_grad()
def test_a_quarter_tile_overlap_is_as_seamless_as_half_a_tile_on_the_tiny_model(tmp_path_factory):
    tiny = tiny_sd.session_tiny_sd(tmp_path_factory)
    unet = UNet2DConditionModel.from_pretrained(tiny.folder / "unet").eval()
    config = json.loads((tiny.folder / "scheduler" / "scheduler_config.json").read_text())
    z0 = smooth_latent(44, 72, seed=0)
    cond = torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(1))
    guided = make_guided_denoiser(unet, cond, None, 1.0)

    def refine(predict) -> torch.Tensor:
        sampler = Sampler("lcm", config)
        sampler.set_steps(8, 0.25, torch.device("cpu"))  # the presets' 2 UNet steps
        return denoise(z0, predict, sampler, torch.Generator().manual_seed(0))

    untiled = refine(guided)
    seams = {}
    for overlap in (2, 4, 8):
        plan = plan_tiles(44, 72, 16, overlap)
        seams[overlap] = seam_ratio(refine(tiled_predictor(guided, plan, "mixture", 8)) - untiled, plan)
    # Measured: 1.24 / 1.03 / 1.02 (15 / 24 / 40 tiles).
    assert seams[2] > seams[4] + 0.1, seams  # an eighth of the tile leaves a step at the borders
    assert seams[4] < seams[8] + 0.05, seams  # a quarter is as good as half, at 60 % of the tiles
