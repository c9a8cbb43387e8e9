"""Which models stay on the accelerator: decided from parameter bytes and a memory budget passed in.

The sizes are those of the real SD1.5 and SDXL architectures (naiup's bundled configs, built on the
meta device: shapes without weights), in the dtypes the engine runs them in on a GPU (fp16 UNet and
text encoders, bf16 VAE). What the moves do on a real card is tests/gpu's part.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from naiup.config import Preset
from naiup.engine.models.load import SD15_SKELETON
from naiup.engine.models.residency import (
    RESERVE,
    ModelSizes,
    Residency,
    model_sizes,
    module_bytes,
    plan_residency,
    unet_working_bytes,
)
from naiup.engine.models.sdxl_single_file import SDXL_SKELETON
from naiup.errors import EngineError, ModelLoadError, OutOfMemoryError

GiB = 2**30
HALF, BF16 = torch.float16, torch.bfloat16


def _sizes(skeleton, family: str, controlnet: bool = False) -> ModelSizes:
    """`controlnet`: with a tile ControlNet of the family (diffusers' from_unet mapping of its UNet)."""

    def config(part: str) -> dict:
        return json.loads((skeleton / part / "config.json").read_text())

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(config("unet"))
        vae = AutoencoderKL.from_config(config("vae"))
        tes = [CLIPTextModel(CLIPTextConfig.from_pretrained(skeleton / "text_encoder"))]
        if family == "sdxl":
            tes.append(
                CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(skeleton / "text_encoder_2"))
            )
        cn = ControlNetModel.from_unet(unet, load_weights_from_unet=False) if controlnet else None
    return ModelSizes(
        unet=module_bytes(unet, HALF),
        text_encoders=sum(module_bytes(te, HALF) for te in tes),
        vae=module_bytes(vae, BF16),
        family=family,
        controlnet=module_bytes(cn, HALF) if cn is not None else 0,
    )


@pytest.fixture(scope="module")
def sdxl() -> ModelSizes:
    return _sizes(SDXL_SKELETON, "sdxl")


@pytest.fixture(scope="module")
def sd15() -> ModelSizes:
    return _sizes(SD15_SKELETON, "sd15")


@pytest.fixture(scope="module")
def sdxl_cn() -> ModelSizes:
    return _sizes(SDXL_SKELETON, "sdxl", controlnet=True)


TILE_XL = unet_working_bytes(128 * 128, cfg=False)  # W2-XL's tiles: 128 latent px, LCM at CFG 1


def test_sizes_are_the_real_architectures_in_their_run_dtypes(sdxl, sd15):
    # Parameter counts of SDXL base: UNet 2,567,463,684; CLIP-L 123,060,480 + bigG 694,659,840;
    # VAE 83,653,863 (buffers such as position ids add a few hundred kB).
    assert sdxl.unet == pytest.approx(2 * 2_567_463_684, rel=1e-3)
    assert sdxl.text_encoders == pytest.approx(2 * (123_060_480 + 694_659_840), rel=1e-3)
    assert sdxl.vae == pytest.approx(2 * 83_653_863, rel=1e-3)
    assert sd15.unet == pytest.approx(2 * 859_520_964, rel=1e-3)


def test_a_card_with_room_keeps_everything_resident(sdxl, sd15):
    assert plan_residency(sdxl, TILE_XL, 80 * GiB, 80 * GiB, 128) == Residency(
        True, False, sdxl.unet + sdxl.vae + sdxl.text_encoders + TILE_XL + RESERVE
    )
    # SD1.5 (2.1 GB) keeps everything on a 4 GiB budget.
    assert plan_residency(
        sd15, unet_working_bytes(64 * 64, True), 4 * GiB, 4 * GiB, 64
    ).text_encoders_resident
    assert plan_residency(sdxl, TILE_XL, None, None, 128) == Residency()  # no accelerator: nothing moves


def test_w2_xl_under_max_vram_gb_7_parks_the_text_encoders_and_encodes_beside_the_unet(sdxl):
    plan = plan_residency(sdxl, TILE_XL, 7 * GiB, 7 * GiB, 128)
    assert plan == Residency(False, False, sdxl.unet + sdxl.vae + TILE_XL + RESERVE)
    assert plan.need <= 7 * GiB
    # Everything resident would not fit: the text encoders' 1.6 GB is what does not.
    assert sdxl.unet + sdxl.vae + sdxl.text_encoders + TILE_XL + RESERVE > 7 * GiB


def test_tighter_still_the_unet_steps_out_while_the_text_encoders_run(sdxl):
    budget = int(6.5 * GiB)  # the encoders no longer fit beside the UNet, one tile still does
    assert sdxl.unet + sdxl.vae + sdxl.text_encoders + RESERVE > budget
    assert plan_residency(sdxl, TILE_XL, budget, budget, 128) == Residency(
        False, True, sdxl.unet + sdxl.vae + TILE_XL + RESERVE
    )


def test_a_card_that_cannot_hold_the_sdxl_unet_and_one_tile_is_refused_with_what_it_needs(sdxl):
    with pytest.raises(ModelLoadError) as info:
        plan_residency(sdxl, TILE_XL, 6 * GiB, 6 * GiB, 128, "noobai-xl.safetensors")
    text = str(info.value)
    assert text.startswith("noobai-xl.safetensors: this SDXL model needs about 6.6 GB of GPU memory")
    assert "UNet 5.1 GB + VAE 0.2 GB + one 128x128 latent tile" in text
    assert "allows 6.4 GB: use an SD1.5 preset on this card or a preset with a smaller tile_size" in text


def test_a_big_card_short_of_free_memory_now_says_so_and_is_worth_another_try(sdxl):
    # 24 GB card, a game holds most of it: not the card's fault, so not "use SD1.5" alone, and an
    # OutOfMemoryError (the daemon retries those later), never a silent out-of-memory loop.
    with pytest.raises(OutOfMemoryError, match=r"only 4\.3 GB is free now \(other programs hold the rest\)"):
        plan_residency(sdxl, TILE_XL, 4 * GiB, 24 * GiB, 128, "x")


def test_cfg_doubles_the_tile_and_a_smaller_tile_needs_less(sdxl):
    assert unet_working_bytes(128 * 128, cfg=True) == 2 * TILE_XL
    assert unet_working_bytes(96 * 96, cfg=False) < TILE_XL
    # SDXL with tile 96 fits a 6 GiB card the 128 tiles do not.
    small = unet_working_bytes(96 * 96, cfg=False)
    assert plan_residency(sdxl, small, 6 * GiB, 6 * GiB, 96).text_encoders_resident is False


def test_module_bytes_counts_the_run_dtype_not_the_host_copy():
    lin = torch.nn.Linear(10, 10)  # fp32 on the host: 110 floats
    assert module_bytes(lin, torch.float16) == 220
    lin.register_buffer("ids", torch.arange(7))  # integer buffers keep their own size
    assert module_bytes(lin, torch.float16) == 220 + 7 * 8


def test_cpu_placement_moves_nothing_and_the_vae_parks_only_resident_models(tmp_path_factory):
    import tiny_sdxl

    from naiup.engine.models.load import load_models
    from naiup.engine.models.placement import Placement

    m = load_models(str(tiny_sdxl.session_tiny_sdxl(tmp_path_factory).folder), "", torch.device("cpu"))
    placement = Placement(m, torch.device("cpu"))
    assert placement.on_device() == [m.unet, m.text_encoder, m.text_encoder_2]
    placement.settle(Residency(text_encoders_resident=False))
    assert placement.on_device() == [m.unet]  # parked encoders are not parked again for the VAE
    assert placement.device_bytes() == 0  # host RAM is not what the plan budgets
    with placement.encoding(needed=True):
        assert m.text_encoder.device.type == "cpu"


TILE_XL_CN = unet_working_bytes(128 * 128, cfg=False, control=True)  # the same with ControlNet tile


def test_a_controlnet_the_job_runs_counts_with_the_unet_and_its_activations_with_each_tile(sdxl, sdxl_cn):
    # SDXL's tile ControlNet (the UNet's encoder and mid block): about 1.25 G parameters, 2.5 GB fp16.
    assert 2.4e9 < sdxl_cn.controlnet < 2.6e9
    assert (sdxl_cn.unet, sdxl_cn.vae, sdxl_cn.text_encoders) == (sdxl.unet, sdxl.vae, sdxl.text_encoders)
    # Its activations beside each UNet call: half the UNet's again (tiling.batch_for_memory's share).
    assert abs(TILE_XL_CN - 1.5 * TILE_XL) <= 1
    weights = sdxl_cn.unet + sdxl_cn.controlnet + sdxl_cn.vae
    assert plan_residency(sdxl_cn, TILE_XL_CN, 80 * GiB, 80 * GiB, 128, control=True) == Residency(
        True, False, weights + sdxl_cn.text_encoders + TILE_XL_CN + RESERVE, controlnet_resident=True
    )
    # On 10 GiB the set without it keeps everything resident; a job running it has the text encoders
    # wait in host RAM, and they still visit beside the UNet and its ControlNet.
    assert plan_residency(sdxl, TILE_XL, 10 * GiB, 10 * GiB, 128).text_encoders_resident
    assert plan_residency(sdxl_cn, TILE_XL_CN, 10 * GiB, 10 * GiB, 128, control=True) == Residency(
        False, False, weights + TILE_XL_CN + RESERVE, controlnet_resident=True
    )


def test_a_controlnet_the_job_does_not_run_stays_on_the_device_only_where_it_fits(sdxl, sdxl_cn):
    everything = sdxl_cn.unet + sdxl_cn.controlnet + sdxl_cn.vae + sdxl_cn.text_encoders + TILE_XL + RESERVE
    # A card with room keeps it (no 2.5 GB round trip when presets alternate).
    assert plan_residency(sdxl_cn, TILE_XL, 80 * GiB, 80 * GiB, 128) == Residency(True, False, everything)
    # 9 GiB: the text encoders, which this job may run, keep their place; the ControlNet waits.
    assert plan_residency(sdxl_cn, TILE_XL, 9 * GiB, 9 * GiB, 128) == Residency(
        True, False, everything - sdxl_cn.controlnet, controlnet_resident=False
    )
    # An 8 GB card (max_vram_gb = 7) runs an SDXL set that has one, as it runs the set without:
    # the load-time check plans for a preset without it, so it is no reason to refuse the set.
    without = plan_residency(sdxl, TILE_XL, 7 * GiB, 7 * GiB, 128)
    assert plan_residency(sdxl_cn, TILE_XL, 7 * GiB, 7 * GiB, 128) == replace(
        without, controlnet_resident=False
    )


def test_a_preset_too_large_for_a_set_that_loads_fails_its_job_naming_its_keys(sdxl_cn):
    # Not a ModelLoadError: the daemon would reload the set and retry this same job forever.
    preset = Preset(name="xl-cn", cfg=3.0, tile_size=128, control_strength=0.5)
    tile = unet_working_bytes(128 * 128, cfg=True, control=True)
    with pytest.raises(EngineError) as info:
        plan_residency(
            sdxl_cn, tile, 7 * GiB, 7 * GiB, 128, "noobai-xl.safetensors", control=True, preset=preset
        )
    assert not isinstance(info.value, ModelLoadError)
    text = str(info.value)
    assert text.startswith("preset xl-cn: its SDXL model needs about 11.1 GB of GPU memory")
    assert "UNet 5.1 GB + ControlNet 2.5 GB + VAE 0.2 GB + one 128x128 latent tile ≈ 3.1 GB" in text
    assert text.endswith(
        "allows 7.5 GB: use a smaller presets.xl-cn.tile_size (now 128), or presets.xl-cn.cfg = 1 (CFG"
        " above 1 runs every tile twice), or presets.xl-cn.control_strength = 0 (the ControlNet then"
        " waits in host RAM), or an SD1.5 preset on this card"
    )
    # The same preset's tiles without CFG and ControlNet fit: only what is set is advised.
    small = replace(preset, cfg=1.0, control_strength=0.0, tile_size=160)
    with pytest.raises(
        EngineError, match=r"use a smaller presets\.xl-cn\.tile_size \(now 160\), or an SD1\.5"
    ):
        plan_residency(sdxl_cn, unet_working_bytes(160 * 160, False), 6 * GiB, 6 * GiB, 160, preset=small)


def test_a_loaded_controlnet_is_sized_and_placed_with_the_unet(tmp_path_factory):
    import tiny_controlnet

    from naiup.engine.models.load import load_models
    from naiup.engine.models.placement import Placement

    cn = tiny_controlnet.session_tiny_controlnets(tmp_path_factory).sdxl
    m = load_models(str(cn.model), "", torch.device("cpu"), controlnet=str(cn.folder))
    assert model_sizes(m).controlnet == module_bytes(m.controlnet, torch.float32) > 0
    placement = Placement(m, torch.device("cpu"))
    assert placement.denoisers() == [m.unet, m.controlnet]
    assert placement.modules() == [m.unet, m.controlnet, m.text_encoder, m.text_encoder_2, m.vae]
    placement.settle(Residency(text_encoders_resident=False, unet_steps_out=True))
    # What the VAE parks, and what steps out while the text encoders visit: the UNet with its ControlNet.
    assert placement.on_device() == [m.unet, m.controlnet]
    # A ControlNet waiting in host RAM (a job that does not run it) is neither: moving the UNet out
    # and back would otherwise bring it to the device.
    placement.settle(Residency(text_encoders_resident=False, unet_steps_out=True, controlnet_resident=False))
    assert placement.denoisers() == placement.on_device() == [m.unet]
    assert m.controlnet in placement.modules()  # still checked at each job's start, and counted
