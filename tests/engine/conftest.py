"""Upscaler fixtures: a tiny seeded Compact model saved as a real .safetensors file, and Real-CUGAN."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from naiup.engine.upscale.upscaler import Upscaler, load_upscaler
from naiup.testing import compact_upscaler, save_weights

# Receptive-field radius of the tiny model in input px: (num_conv + 2) 3x3 convs -> 4 px.
TINY_RF = 4


def _save_tiny(path: Path, scale: int) -> Path:
    return save_weights(compact_upscaler(scale, num_feat=8, num_conv=2), path)


@pytest.fixture(scope="session")
def tiny_x2_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save_tiny(tmp_path_factory.mktemp("models") / "tiny-x2.safetensors", 2)


@pytest.fixture(scope="session")
def tiny_x4_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save_tiny(tmp_path_factory.mktemp("models") / "tiny-x4.safetensors", 4)


@pytest.fixture
def tiny_x2(tiny_x2_file: Path) -> Upscaler:
    return load_upscaler(str(tiny_x2_file), torch.device("cpu"))


@pytest.fixture(scope="session")
def realcugan() -> Upscaler:
    return load_upscaler("realcugan-2x", torch.device("cpu"))


@pytest.fixture(scope="session")
def nai_patch(nai_fixtures: Path):
    """A 128x128 detailed crop (hair, halo, line art) of a real NovelAI V3 image, RGB."""
    from PIL import Image

    with Image.open(nai_fixtures / "nai3_640_text_stealth.png") as im:
        return im.convert("RGB").crop((256, 192, 384, 320))


@pytest.fixture
def one_torch_thread():
    """Tiny convs on a shared 2-core box: OpenMP spin-waits cost more than they save."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
