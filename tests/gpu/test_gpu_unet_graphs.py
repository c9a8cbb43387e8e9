"""The CUDA-graphed UnetCall on a real GPU: what torch.compile's "reduce-overhead" mode does with the
UNet outside our code. A graph replays recorded pointers, so these check that (a) an output is not
overwritten by the next replay, (b) a new timestep value is not a new graph, (c) the UNet parked in
host RAM and brought back (offload.parked: new weight addresses) still gives the eager answer, and
(d) a LoRA fused in place (LoraFuser: copy_ into the weights) is seen by the replay."""

from __future__ import annotations

import pytest
import tiny_sd
import torch
from diffusers import UNet2DConditionModel

from naiup.engine.diffusion.unet_graphs import UnetCall

# fp16 UNet, compiled vs eager: different kernels and fusions; the tiny UNet's outputs are O(1).
TOL = {"rtol": 2e-2, "atol": 2e-2}


@pytest.fixture(scope="module")
def unet(tmp_path_factory, cuda) -> UNet2DConditionModel:
    tiny = tiny_sd.session_tiny_sd(tmp_path_factory)
    model = UNet2DConditionModel.from_pretrained(tiny.folder / "unet").eval().requires_grad_(False)
    return model.to(device=cuda, dtype=torch.float16)


def _inputs(cuda: torch.device, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 4, 16, 16, generator=g).to(cuda, torch.float16)
    ehs = torch.randn(4, 77, 32, generator=g).to(cuda, torch.float16)
    return x, ehs


@torch.no_grad()
def test_the_graphed_unet_call_matches_eager_across_replays_parking_and_in_place_edits(unet, cuda):
    from torch._dynamo.utils import counters

    call = UnetCall(unet, graphs=True)
    (x1, e1), (x2, e2) = _inputs(cuda, 1), _inputs(cuda, 2)
    t1, t2 = torch.tensor(999, device=cuda), torch.tensor(500, device=cuda)

    def eager(x, t, e):
        return unet(x, t, encoder_hidden_states=e).sample

    for _ in range(3):  # warm-up, recording, then replays
        out1 = call(x1, t1, e1)
        out2 = call(x2, t2, e2)  # a replay must not overwrite out1
        torch.testing.assert_close(out1, eager(x1, t1, e1), **TOL)
        torch.testing.assert_close(out2, eager(x2, t2, e2), **TOL)
    assert call.fixed_shapes, "the compiled call fell back to eager"
    graphs = counters["stats"]["unique_graphs"]

    # (b) a timestep value never seen is the same graph
    call(x1, torch.tensor(250, device=cuda), e1)
    assert counters["stats"]["unique_graphs"] == graphs

    # (c) parked in host RAM and back, as offload.parked does between the UNet and the VAE
    unet.to("cpu")
    unet.to(cuda)
    torch.testing.assert_close(call(x1, t1, e1), eager(x1, t1, e1), **TOL)
    assert call.fixed_shapes, "parking the UNet made the compiled call fall back to eager"

    # (d) weights edited in place (a LoRA fused by LoraFuser) are what the replay computes with
    before = call(x1, t1, e1)
    weight = unet.conv_in.weight
    saved = weight.detach().clone()
    weight.add_(0.05)
    try:
        after = call(x1, t1, e1)
        torch.testing.assert_close(after, eager(x1, t1, e1), **TOL)
        assert not torch.allclose(after, before, **TOL), "the replay did not see the edited weights"
    finally:
        weight.copy_(saved)
