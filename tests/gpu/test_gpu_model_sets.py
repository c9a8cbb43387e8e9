"""Switching model sets on CUDA gives the old set's memory back before the new one loads: its
weights, and the CUDA graph pools of its compiled UNet, which torch keeps in process-wide compiler
state (not in the model), so dropping the model alone would leave them behind."""

from __future__ import annotations

import nai_writer
import pytest
import tiny_sd
import tiny_sdxl
import torch

from naiup.config import Config, ModelConfig, Preset
from naiup.daemon.engine_slot import EngineSlot
from naiup.engine import Engine
from naiup.job import run_job

MIB = 2**20


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> Config:
    sd, xl = tiny_sd.session_tiny_sd(tmp_path_factory), tiny_sdxl.session_tiny_sdxl(tmp_path_factory)
    # SD1.5's UNet compiled (its graphs' pools must go too), SDXL's eager: one compile keeps it short.
    return Config(
        model=ModelConfig(
            checkpoint=str(sd.folder), lcm_lora=str(sd.lcm_lora), device="cuda", unet_graphs="on"
        ),
        models={"xl": ModelConfig(checkpoint=str(xl.folder), lcm_lora="", device="cuda", unet_graphs="off")},
        presets={
            "sd": Preset(name="sd", upscaler="lanczos", steps=2, denoise=0.5),
            "xl": Preset(name="xl", model="xl", upscaler="lanczos", sampler="euler", steps=4, denoise=0.5),
        },
    )


def test_a_switch_frees_the_old_sets_weights_and_graph_pools_first(sets, tmp_path, cuda):
    src = nai_writer.write_nai_png(tmp_path / "a.png", (64, 64), seed=3)
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    allocated, reserved = torch.cuda.memory_allocated(cuda), torch.cuda.memory_reserved(cuda)
    slot = EngineSlot(factory=Engine)
    for name in ("sd", "xl"):
        preset = sets.preset(name)
        run_job(src, preset, slot.engine_for(sets, preset), sets)
        assert torch.cuda.memory_allocated(cuda) > allocated + MIB  # the set is on the card
        slot.unload()
        torch.cuda.synchronize()
        assert torch.cuda.memory_allocated(cuda) <= allocated + MIB, f"{name}'s tensors outlived unload"
        assert torch.cuda.memory_reserved(cuda) <= reserved + 8 * MIB, f"{name}'s memory stayed reserved"
