"""Out of accelerator memory mid-refine: retried with less, and a clear error when even that fails."""

from __future__ import annotations

import contextlib
import logging
import weakref
from dataclasses import replace

import numpy as np
import pytest
import tiny_sd
import torch
from PIL import Image

from naiup.config import Preset
from naiup.engine.diffusion import refine as refine_module
from naiup.engine.diffusion.refine import Refiner, memory_ladder
from naiup.errors import OutOfMemoryError

# 96x96 px -> 12x12 latent; 8-latent tiles overlapping by 4 -> 4 tiles, 3 at a time through the UNet.
MULTI = Preset(name="t", steps=8, denoise=0.5, tile_size=8, overlap=4, tile_batch_size=3, vae_tiling="exact")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def refiner(tmp_path_factory) -> Refiner:
    r = Refiner(tiny_sd.cpu_config(tmp_path_factory))
    r.load()
    return r


def _image() -> Image.Image:
    return Image.fromarray(np.random.default_rng(5).integers(0, 256, (96, 96, 3), dtype=np.uint8), "RGB")


def _refine(refiner: Refiner, preset: Preset) -> bytes:
    return refiner.refine(_image(), preset, prompt="1girl", negative_prompt="", seed=11).tobytes()


@contextlib.contextmanager
def unet_fails(refiner: Refiner, when):
    def hook(_module, args):
        if when(args[0]):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.50 GiB")

    handle = refiner.models.unet.register_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def test_the_ladder_halves_the_tile_batch_then_goes_one_at_a_time_with_the_low_memory_vae():
    ladder = memory_ladder(MULTI)
    assert [(p.tile_batch_size, p.vae_tiling) for p in ladder] == [(3, "exact"), (1, "low-memory")]
    ladder = memory_ladder(replace(MULTI, tile_batch_size=8, vae_tiling="auto"))
    assert [(p.tile_batch_size, p.vae_tiling) for p in ladder] == [
        (8, "auto"),
        (4, "low-memory"),
        (1, "low-memory"),
    ]


def test_running_out_of_memory_retries_with_less_and_parks_the_models(refiner, monkeypatch, caplog):
    parks: list[int] = []
    real = refine_module.parked

    @contextlib.contextmanager
    def spy(modules, device):
        parks.append(len(modules))
        with real(modules, device):
            yield

    monkeypatch.setattr(refine_module, "parked", spy)
    caplog.set_level(logging.WARNING, logger="naiup.engine.diffusion.refine")
    with unet_fails(refiner, lambda x: x.shape[0] > 1):  # only a batch of one tile fits
        got = _refine(refiner, MULTI)
    assert "refine out of memory" in caplog.text and "tile_batch_size=1" in caplog.text
    assert parks == [2, 2]  # the retry parked the UNet and text encoder for encode and decode
    monkeypatch.setattr(refine_module, "parked", real)
    assert got == _refine(refiner, replace(MULTI, tile_batch_size=1, vae_tiling="low-memory"))


def test_the_failed_attempts_tensors_are_freed_before_the_retry_runs(refiner):
    # A retry inside the `except` block would run beside everything the traceback's frames hold:
    # on a GPU, the very memory it ran out of.
    held: list[weakref.ref] = []
    alive_at_retry: list[bool] = []

    def hook(_module, args):
        if args[0].shape[0] > 1:
            scratch = torch.zeros(1024)  # only this frame, kept by the traceback, refers to it
            held.append(weakref.ref(scratch))
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.50 GiB")
        alive_at_retry.append(any(ref() is not None for ref in held))

    handle = refiner.models.unet.register_forward_pre_hook(hook)
    try:
        _refine(refiner, MULTI)
    finally:
        handle.remove()
    assert held and alive_at_retry and not any(alive_at_retry)


def test_when_even_the_least_does_not_fit_it_is_a_clear_error(refiner):
    with (
        unet_fails(refiner, lambda x: True),
        pytest.raises(OutOfMemoryError, match="out of CPU memory even one"),
    ):
        _refine(refiner, MULTI)
    assert _refine(refiner, MULTI)  # and the refiner still works afterwards


def test_other_failures_are_not_retried(refiner):
    calls = []

    def hook(_module, args):
        calls.append(1)
        raise ValueError("a bug, not memory")

    handle = refiner.models.unet.register_forward_pre_hook(hook)
    try:
        with pytest.raises(ValueError, match="a bug"):
            _refine(refiner, MULTI)
    finally:
        handle.remove()
    assert len(calls) == 1
