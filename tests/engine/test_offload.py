"""Room for the VAE on a small GPU: when the models are parked, and that they always come back."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable

import numpy as np
import pytest
import tiny_sd
import torch
from diffusers import AutoencoderKL
from PIL import Image

from naiup.config import Preset
from naiup.engine.device import misplaced
from naiup.engine.diffusion import refine as refine_module
from naiup.engine.diffusion.refine import Refiner
from naiup.engine.models.load import SD15_SKELETON
from naiup.engine.models.offload import needs_room, parked

GB = 10**9
W4 = (4864, 3328)  # 4x of 832x1216, height x width
W2 = (2432, 1664)


@pytest.fixture(scope="module")
def sd_vae_bf16() -> AutoencoderKL:
    config = json.loads((SD15_SKELETON / "vae" / "config.json").read_text())
    with torch.device("meta"):  # shapes only: the estimate reads the config and the conv sizes
        vae = AutoencoderKL.from_config(config)
    return vae.to(torch.bfloat16)


def test_a_6gb_card_or_a_4gib_cap_parks_the_models_for_a_4x_decode_but_not_for_2x(sd_vae_bf16):
    models = 2.2 * GB  # SD1.5 UNet + text encoder + VAE in fp16/bf16
    left_beside_models = int(4 * 2**30 - models)  # model.max_vram_gb = 4
    assert needs_room(sd_vae_bf16, "decode", *W4, left_beside_models)
    assert needs_room(sd_vae_bf16, "encode", *W4, left_beside_models)
    assert not needs_room(sd_vae_bf16, "decode", *W2, left_beside_models)
    # Parked, the UNet and text encoder (~1.95 GB) are out: the same pass now fits.
    assert not needs_room(sd_vae_bf16, "decode", *W4, int(left_beside_models + 1.95 * GB))
    assert not needs_room(sd_vae_bf16, "decode", *W4, None)  # CPU: nothing to make room on


def test_parked_modules_wait_on_the_cpu_and_come_back_even_after_a_failure():
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    target = torch.device("meta")  # stands in for the accelerator: any device other than the CPU
    with parked([a, b], target):
        assert a.weight.device.type == b.weight.device.type == "cpu"
    assert a.weight.device == b.weight.device == target
    a = torch.nn.Linear(2, 2)  # a meta module has no data to bring back to the CPU
    with pytest.raises(RuntimeError, match="boom"), parked([a], target):
        raise RuntimeError("boom")
    assert a.weight.device == target


class _NoRoomOffHost(torch.nn.Linear):
    """A model that cannot get back from host RAM: our own module, running out of memory on any move
    off the CPU the way a UNet does on a full card (its sibling moved before it stays moved)."""

    def _apply(self, fn, recurse=True):
        if fn(torch.empty(0)).device.type != "cpu":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB")
        return super()._apply(fn, recurse)


def test_a_failed_way_back_never_hides_the_blocks_error_and_leaves_the_rest_to_the_next_job(caplog):
    meta = torch.device("meta")  # stands in for the accelerator
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), _NoRoomOffHost(2, 2))
    caplog.set_level(logging.WARNING, logger="naiup.engine.models.offload")
    # The VAE pass failed (out of memory, say): that error reaches the retry ladder, not the one of
    # the way back, which runs while the failed pass's tensors are still alive.
    with pytest.raises(RuntimeError, match="the VAE pass"), parked([model], meta):
        raise RuntimeError("the VAE pass")
    assert "could not bring the parked models back" in caplog.text
    assert misplaced(model, meta, torch.float32) == (2, 0)  # split: the next job places it (below)
    # The block succeeded but the way back ran out of memory: that is an OOM for the ladder to retry.
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), _NoRoomOffHost(2, 2))
    with pytest.raises(torch.OutOfMemoryError), parked([model], meta):
        pass


def _tiny_refiner(tmp_path_factory) -> tuple[Refiner, Callable[[], bytes]]:
    """A CPU Refiner of the tiny model, and a refine of one fixed image with it (its bytes)."""
    refiner = Refiner(tiny_sd.cpu_config(tmp_path_factory))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8), "RGB")
    preset = Preset(name="p", steps=8, denoise=0.5)

    def run() -> bytes:
        return refiner.refine(image, preset, prompt="1girl", negative_prompt="", seed=3).tobytes()

    return refiner, run


def test_every_job_starts_with_the_models_wholly_in_place(tmp_path_factory, caplog):
    refiner, run = _tiny_refiner(tmp_path_factory)
    before = run()
    m = refiner.models
    # What a failed way back leaves (the CPU has no second device: a part in another dtype stands in
    # for a part on another device; both are `misplaced`).
    m.unet.up_blocks[1].to(torch.float64)
    m.vae.decoder.to(torch.float64)  # fp64 and back is exact: the result must not change
    assert misplaced(m.unet, refiner.device, torch.float32) != (0, 0)
    caplog.set_level(logging.WARNING, logger="naiup.engine.diffusion.refine")
    assert run() == before
    assert "was not all on cpu; moved it back" in caplog.text
    for model in (m.unet, m.text_encoder, m.vae):
        assert misplaced(model, refiner.device, torch.float32) == (0, 0)


def test_the_refiner_parks_around_both_vae_passes_when_short_and_the_result_is_unchanged(
    tmp_path_factory, monkeypatch
):
    _, run = _tiny_refiner(tmp_path_factory)
    plain = run()
    events: list[str] = []
    real_parked = refine_module.parked

    @contextlib.contextmanager
    def spy(modules, device):
        events.append(f"park {len(modules)}")
        with real_parked(modules, device):
            yield
        events.append("back")

    monkeypatch.setattr(refine_module, "parked", spy)
    monkeypatch.setattr(refine_module, "free_memory_bytes", lambda device: 1)  # a card with no room
    assert run() == plain
    assert events == ["park 2", "back", "park 2", "back"]  # encode, then decode
    monkeypatch.setattr(refine_module, "free_memory_bytes", lambda device: 10**12)
    events.clear()
    run()
    assert events == []  # room enough: nothing moves


@pytest.mark.parametrize(("free", "core"), [(80 * GB, 304), (20 * GB, 192), (14 * GB, 128), (8 * GB, 96)])
def test_exact_mode_takes_the_largest_tiles_the_device_holds(sd_vae_bf16, monkeypatch, free, core):
    # W2's 208x304 latent: one tile on an 80 GB card (no halo at all), larger cores than the default
    # while they fit (estimates 24.6 / 14.3 / 10.7 GB for 304 / 192 / 128), and the default 96 once
    # the tiles must wait in host RAM.
    from naiup.engine.vae import tiled as vt

    monkeypatch.setattr(vt, "free_memory_bytes", lambda device: free)
    plan = vt.plan_vae(sd_vae_bf16, "decode", *W2, "exact", vt.DEFAULT_CORE)
    assert plan.park_on_host == (free == 8 * GB)
    assert vt._core_for(sd_vae_bf16, "decode", plan, (W2[0] // 8, W2[1] // 8)) == core
    low = vt.plan_vae(sd_vae_bf16, "decode", *W2, "low-memory", vt.DEFAULT_CORE)
    assert vt._core_for(sd_vae_bf16, "decode", low, (W2[0] // 8, W2[1] // 8)) == vt.LOW_MEMORY_CORE


def test_no_exact_tile_reaches_2_to_the_31_elements(sd_vae_bf16, monkeypatch):
    # 4x of 832x1216 (416x608 latent) as one tile would make a 256 x 3328 x 4864 activation (4.1e9
    # elements): cuDNN's 64-bit path, never tried on a GPU. Even a card that holds it gets a smaller core.
    from naiup.engine.vae import tiled as vt

    latent = (1216 * 4 // 8, 832 * 4 // 8)
    halo = vt.st.decoder_halo(sd_vae_bf16)
    assert vt.widest_activation(sd_vae_bf16, latent, max(latent), halo) == 256 * 3328 * 4864
    monkeypatch.setattr(vt, "free_memory_bytes", lambda device: 10**15)  # room for anything
    plan = vt.plan_vae(sd_vae_bf16, "decode", latent[0] * 8, latent[1] * 8, "exact", vt.DEFAULT_CORE)
    core = vt._core_for(sd_vae_bf16, "decode", plan, latent)
    assert core < max(latent)
    assert vt.widest_activation(sd_vae_bf16, latent, core, halo) <= vt.MAX_TILE_ELEMENTS
    # W2 (208x304 latent, 1.0e9 elements) still runs as one native tile on such a card.
    assert vt._core_for(sd_vae_bf16, "decode", plan, (208, 304)) == 304
