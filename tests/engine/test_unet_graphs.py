"""CUDA-graphed UNet tiles: when graphs are used (a pure decision), fixed-shape tile batches (padding
changes nothing), and tile batches sized from free memory."""

from __future__ import annotations

import pytest
import tiny_sd
import torch
from diffusers import UNet2DConditionModel

from naiup.engine.diffusion.refine import make_guided_denoiser
from naiup.engine.diffusion.tiling import batch_for_memory, batch_shape, plan_tiles, tiled_predictor
from naiup.engine.diffusion.unet_graphs import UnetCall, use_unet_graphs

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize(
    ("setting", "device", "capability", "triton", "expected"),
    [
        ("auto", "cuda", (9, 0), True, True),  # H100/H200
        ("auto", "cuda", (7, 5), True, True),  # Turing: Triton's minimum is 7.0
        ("auto", "cuda", (6, 1), True, False),  # Pascal: Triton cannot compile for it
        ("auto", "cuda", (8, 6), False, False),  # no Triton (e.g. a Windows wheel without it)
        ("auto", "cpu", None, True, False),  # no graphs on the CPU; compiling costs minutes there
        ("auto", "mps", None, False, False),
        ("on", "cpu", None, False, True),  # an explicit choice is honoured
        ("off", "cuda", (9, 0), True, False),
    ],
)
def test_when_the_unet_is_graphed(setting, device, capability, triton, expected):
    assert use_unet_graphs(setting, device, capability, triton) is expected


def test_auto_leaves_graphs_off_where_their_private_memory_would_squeeze_the_vae():
    assert use_unet_graphs("auto", "cuda", (8, 9), True, memory_gib=24.0) is True  # RTX 4090
    assert use_unet_graphs("auto", "cuda", (8, 6), True, memory_gib=8.0) is False  # an 8 GB card
    assert use_unet_graphs("auto", "cuda", (9, 0), True, memory_gib=4.0) is False  # max_vram_gb = 4
    assert use_unet_graphs("on", "cuda", (9, 0), True, memory_gib=4.0) is True


def test_fixed_batches_take_few_shapes_whatever_the_tile_count():
    shapes = {batch_shape(n, 16, fixed=True) for n in range(1, 400)}
    assert shapes == {1, 2, 4, 8, 16}  # log2(16) + 1 graphs serve every image
    assert batch_shape(54, 16, fixed=True) == 16 and batch_shape(5, 16, fixed=True) == 8
    assert batch_shape(9, 4) == 3  # not fixed: balanced, the fewest padded slots
    assert batch_shape(24, 12, fixed=True) == 12  # a batch size that is not a power of two stays


def test_tile_batch_is_lowered_to_what_free_memory_holds():
    tile = 64 * 64
    assert batch_for_memory(16, None, tile, cfg=False) == 16  # CPU: the preset's value
    assert batch_for_memory(16, 100 * 2**30, tile, cfg=False) == 16
    per_tile = 50_000 * tile  # ~0.2 GB
    assert batch_for_memory(16, int(5 * per_tile / 0.8), tile, cfg=False) == 4  # 5 fit -> power of two
    assert batch_for_memory(16, int(5 * per_tile / 0.8), tile, cfg=True) == 2  # CFG doubles the batch
    assert batch_for_memory(16, 0, tile, cfg=False) == 1  # never zero


@pytest.fixture(scope="module")
def unet(tmp_path_factory) -> UNet2DConditionModel:
    tiny = tiny_sd.session_tiny_sd(tmp_path_factory)
    return UNet2DConditionModel.from_pretrained(tiny.folder / "unet").eval()


@torch.no_grad()
def test_padded_fixed_shape_batches_give_the_unpadded_result(unet):
    g = torch.Generator().manual_seed(0)
    cond = torch.randn(1, 77, 32, generator=g)
    guided = make_guided_denoiser(unet, cond, None, 1.0)
    assert guided.fixed_shapes is False  # an eager UNet: balanced batches
    shapes: list[tuple[int, ...]] = []
    hook = unet.register_forward_hook(lambda _m, a, _o: shapes.append(tuple(a[0].shape)))
    plan = plan_tiles(20, 28, 8, 4)  # 4 x 6 = 24 tiles
    x, t = torch.randn(1, 4, 20, 28, generator=g), torch.tensor(259)
    try:
        balanced = tiled_predictor(guided, plan, "mixture", 16)(x, t)
        assert shapes == [(12, 4, 8, 8)] * 2
        shapes.clear()
        guided.fixed_shapes = True  # what a graphed UnetCall sets
        fixed = tiled_predictor(guided, plan, "mixture", 16)(x, t)
        assert shapes == [(16, 4, 8, 8)] * 2  # 24 tiles: 16 + 8 real and 8 padding slots
    finally:
        hook.remove()
    torch.testing.assert_close(fixed, balanced, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_eager_unet_call_is_the_plain_module_call(unet):
    g = torch.Generator().manual_seed(1)
    x, ehs, t = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 77, 32, generator=g), torch.tensor(99)
    call = UnetCall(unet, graphs=False)
    assert call.fixed_shapes is False
    assert torch.equal(call(x, t, ehs), unet(x, t, encoder_hidden_states=ehs).sample)
