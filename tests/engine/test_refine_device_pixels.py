"""Pixels from the upscaler go to the refine as a tensor where they were made, and the refine's
result comes back once as uint8: the same bytes as the old path through PIL images on the CPU."""

from __future__ import annotations

import numpy as np
import pytest
import tiny_sd
import torch
from PIL import Image

from naiup.config import ModelConfig, Preset
from naiup.engine.diffusion.refine import Refiner, pad_to_multiple, rgb_pixels, to_image, to_pixels
from naiup.engine.engine import Engine
from naiup.metadata.read import ImageMetadata

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# 37x45 px -> 74x90 after Real-CUGAN 2x -> padded to 80x96 (10x12 latent), 8-latent tiles: 2x2.
PRESET = Preset(
    name="t", scale=2.0, upscaler="realcugan-2x", steps=8, denoise=0.5, tile_size=8, overlap=4,
    tile_batch_size=3, vae_tiling="exact", seed=5,
)  # fmt: skip


@pytest.fixture(scope="module")
def model_cfg(tmp_path_factory) -> ModelConfig:
    tiny = tiny_sd.session_tiny_sd(tmp_path_factory)
    return ModelConfig(checkpoint=str(tiny.folder), lcm_lora=str(tiny.lcm_lora), device="cpu")


def _image(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


def test_engine_device_pixel_path_gives_the_bytes_of_the_image_path(model_cfg):
    image = _image(37, 45)
    fast = Engine(model_cfg, torch.device("cpu"))
    slow = Engine(model_cfg, torch.device("cpu"), device_pixels=False)
    a = fast.process(image, ImageMetadata(), PRESET)
    b = slow.process(image, ImageMetadata(), PRESET)
    assert a.image.size == b.image.size == (74, 90)
    assert a.parameters["size"] == b.parameters["size"] == "74x90"
    assert a.image.tobytes() == b.image.tobytes()


def test_refiner_takes_a_pil_image_or_its_uint8_pixels_alike(model_cfg):
    refiner = Refiner(model_cfg)
    image = _image(40, 48, seed=2)
    kw = {"prompt": "1girl", "negative_prompt": "", "seed": 3}
    assert (
        refiner.refine(image, PRESET, **kw).tobytes()
        == refiner.refine(rgb_pixels(image), PRESET, **kw).tobytes()
    )
    with pytest.raises(Exception, match="uint8"):
        refiner.refine(rgb_pixels(image).float(), PRESET, **kw)


@pytest.mark.parametrize(("h", "w"), [(45, 37), (8, 16), (3, 5), (9, 2), (17, 64)])
def test_padding_matches_numpys_reflect_or_edge_modes(h, w):
    arr = np.random.default_rng(h * w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    ph, pw = -h % 8, -w % 8
    mode = "reflect" if ph < h and pw < w else "edge"
    expected = np.pad(arr, ((0, ph), (0, pw), (0, 0)), mode=mode)
    padded, size = pad_to_multiple(torch.from_numpy(arr))
    assert size == (h, w) and np.array_equal(padded.numpy(), expected)


def test_pixel_conversions_round_trip_every_uint8_value():
    arr = torch.arange(256, dtype=torch.uint8).reshape(16, 16, 1).expand(16, 16, 3).contiguous()
    pixels = to_pixels(arr)
    assert pixels.shape == (1, 3, 16, 16) and pixels.stride()[1] == 1  # NHWC memory, like diffusers'
    assert np.array_equal(np.asarray(to_image(pixels, (16, 16))), arr.numpy())
