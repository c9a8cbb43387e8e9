"""Tiled predictor: blends model outputs exactly, in fixed-shape batches (the Refiner runs are in
test_tiling_refiner.py)."""

from __future__ import annotations

import pytest
import torch

from naiup.engine.diffusion.tiling import plan_tiles, tiled_predictor
from naiup.errors import EngineError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _pixelwise(seed: int = 0):
    torch.manual_seed(seed)
    conv = torch.nn.Conv2d(4, 4, 1)

    @torch.no_grad()
    def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return conv(x) * (1 + t.float() / 1000)

    return guided


@pytest.mark.parametrize("method", ["multidiffusion", "mixture"])
@pytest.mark.parametrize(("h", "w", "tile", "overlap", "batch"), [(65, 97, 32, 16, 4), (24, 40, 16, 4, 3)])
def test_pixelwise_denoiser_gives_the_untiled_result_without_seams(method, h, w, tile, overlap, batch):
    guided = _pixelwise()
    x = torch.randn(1, 4, h, w)
    t = torch.tensor(259)
    tiled = tiled_predictor(guided, plan_tiles(h, w, tile, overlap), method, batch)(x, t)
    assert torch.allclose(tiled, guided(x, t), rtol=0, atol=2e-6)


def test_tiles_run_in_fixed_shape_balanced_batches():
    shapes = []
    inner = _pixelwise()

    def guided(x, t):
        shapes.append(tuple(x.shape))
        return inner(x, t)

    plan = plan_tiles(65, 97, 32, 16)  # 4 x 6 = 24 tiles
    x = torch.randn(1, 4, 65, 97)
    out = tiled_predictor(guided, plan, "mixture", 7)(x, torch.tensor(99))
    # 24 tiles at batch 7 -> 4 batches of 6 (balanced), never a ragged last batch.
    assert shapes == [(6, 4, 32, 32)] * 4
    assert torch.allclose(out, inner(x, torch.tensor(99)), atol=2e-6)
    shapes.clear()
    tiled_predictor(guided, plan_tiles(65, 97, 32, 16), "mixture", 5)(x, torch.tensor(99))
    assert len(set(shapes)) == 1 and len(shapes) == 5  # 24 at 5 -> 5 batches of 5, last one padded


def test_fp16_model_output_blends_without_nan_at_corners():
    def guided(x, t):
        return torch.full_like(x, 2.0, dtype=torch.float16)

    x = torch.zeros(1, 4, 65, 97, dtype=torch.float16)
    out = tiled_predictor(guided, plan_tiles(65, 97, 32, 16), "mixture", 4)(x, torch.tensor(1))
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    assert torch.all(out == 2.0)


def test_canvas_of_another_size_is_refused():
    predict = tiled_predictor(_pixelwise(), plan_tiles(32, 32, 16, 8), "mixture", 2)
    with pytest.raises(EngineError, match="32x32"):
        predict(torch.zeros(1, 4, 32, 40), torch.tensor(1))
