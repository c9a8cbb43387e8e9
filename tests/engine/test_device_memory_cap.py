"""model.max_vram_gb: tiles plan for the cap and the allocator is told it. CUDA is faked: no GPU here."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from naiup.config import ModelConfig
from naiup.engine import device as dev
from naiup.engine.engine import Engine
from naiup.engine.upscale_tiles import initial_tile
from naiup.engine.vae_memory import VaeMemory, choose_vae_plan
from naiup.errors import ConfigError

GIB = 2**30
CUDA = torch.device("cuda")


@pytest.fixture
def fake_cuda(monkeypatch):
    """An 80 GiB card with 70 GiB free, of which torch has allocated 2 GiB (the models)."""
    state = {"fraction": None, "allocated": 2 * GIB, "reserved": 2 * GIB}
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (70 * GIB, 80 * GIB))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: state["allocated"])
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: state["reserved"])
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(
        torch.cuda, "get_device_properties", lambda device=None: SimpleNamespace(total_memory=80 * GIB)
    )
    monkeypatch.setattr(
        torch.cuda, "set_per_process_memory_fraction", lambda f, device=None: state.update(fraction=f)
    )
    monkeypatch.setattr(dev, "_caps", {})
    return state


def test_without_a_cap_free_memory_is_what_the_card_has_free(fake_cuda):
    assert dev.free_memory_bytes(CUDA) == 70 * GIB


def test_a_cap_bounds_free_memory_and_tells_the_allocator(fake_cuda):
    dev.cap_memory(CUDA, 4 * GIB)
    assert fake_cuda["fraction"] == pytest.approx(4 / 80)
    assert dev.free_memory_bytes(CUDA) == 2 * GIB  # 4 GiB cap - 2 GiB already ours
    assert dev.free_memory_bytes(torch.device("cuda:0")) == 2 * GIB  # same card, other spelling
    fake_cuda["allocated"] = fake_cuda["reserved"] = 5 * GIB
    assert dev.free_memory_bytes(CUDA) == 0  # never negative


def test_blocks_torch_cached_but_no_longer_uses_count_as_free(fake_cuda):
    fake_cuda["reserved"] = 6 * GIB  # 4 GiB freed by tensors, still held by the caching allocator
    assert dev.free_memory_bytes(CUDA) == 74 * GIB
    dev.cap_memory(CUDA, 8 * GIB)
    assert dev.free_memory_bytes(CUDA) == 6 * GIB  # the cap counts what tensors use


def test_lifting_the_cap_restores_the_whole_card(fake_cuda):
    dev.cap_memory(CUDA, 4 * GIB)
    dev.cap_memory(CUDA, 0)
    assert fake_cuda["fraction"] == 1.0
    assert dev.free_memory_bytes(CUDA) == 70 * GIB


def test_tile_sizes_and_vae_mode_follow_the_cap(fake_cuda):
    size, per_px = (3328, 4864), 60_000.0
    uncapped = initial_tile(CUDA, size, per_px, torch.float16)
    dev.cap_memory(CUDA, 4 * GIB)
    capped = initial_tile(CUDA, size, per_px, torch.float16)
    assert capped < uncapped
    # A W4-sized decode that fits 70 GiB untiled no longer does within a 4 GiB cap.
    mem = VaeMemory(untiled=20 * GIB, head=1 * GIB, pooled=12 * GIB, tile=GIB // 4)
    assert choose_vae_plan(mem, 70 * GIB, 64 * GIB).mode == "off"
    assert choose_vae_plan(mem, dev.free_memory_bytes(CUDA), 64 * GIB).park_on_host


def test_the_engine_caps_its_device_once_from_the_config(fake_cuda):
    engine = Engine(ModelConfig(max_vram_gb=6), CUDA)
    assert engine.device == CUDA
    assert fake_cuda["fraction"] == pytest.approx(6 / 80)
    assert dev.free_memory_bytes(CUDA) == 4 * GIB


def test_the_cap_is_a_no_op_on_the_cpu(monkeypatch):
    monkeypatch.setattr(dev, "_caps", {})
    dev.cap_memory(torch.device("cpu"), 4 * GIB)
    assert dev.free_memory_bytes(torch.device("cpu")) is None


@pytest.mark.parametrize("value", [-1, 0.5])
def test_a_cap_below_one_gib_is_refused_naming_the_key(tmp_path, value):
    from naiup.config import load_config

    path = tmp_path / "config.toml"
    path.write_text(f"[model]\nmax_vram_gb = {value}\n")
    with pytest.raises(ConfigError, match=r"model\.max_vram_gb"):
        load_config(path)
