"""SDXL LoRAs: Kohya (LDM block names, lora_te1/lora_te2) and diffusers/peft names fuse where they
should and restore bit for bit."""

from __future__ import annotations

from pathlib import Path

import pytest
import tiny_sdxl
import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import load_file, save_file

from naiup.engine.models.load import load_models
from naiup.engine.models.lora import LoraFuser, read_lora
from naiup.errors import ModelLoadError

UNET = "model.diffusion_model."


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tiny_sdxl.TinySDXL:
    return tiny_sdxl.session_tiny_sdxl(tmp_path_factory)


@pytest.fixture
def models(tiny):
    return load_models(str(tiny.folder), "", torch.device("cpu"))


def _pair(shape: tuple[int, ...], g: torch.Generator, rank: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    down_shape = (rank, *shape[1:]) if len(shape) == 4 else (rank, shape[1])
    up_shape = (shape[0], rank, 1, 1) if len(shape) == 4 else (shape[0], rank)
    return torch.randn(down_shape, generator=g) * 0.1, torch.randn(up_shape, generator=g) * 0.1


def _delta(down: torch.Tensor, up: torch.Tensor, scale: float, shape) -> torch.Tensor:
    return ((up.flatten(1) @ down.flatten(1)) * scale).reshape(shape)


def _kohya_file(tiny, out: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """A Kohya SDXL LoRA over every UNet layer under its *LDM* name (from the single file, whose names
    diffusers' own converter accepts), plus a few CLIP-L and bigG layers; returns the file and the
    single file's state dict with the deltas already applied (the expected fused weights)."""
    g = torch.Generator().manual_seed(3)
    single = load_file(tiny.single_file)
    lora, expected = {}, dict(single)
    alpha, rank = 2.0, 4
    for key, w in single.items():
        if key.startswith(UNET) and key.endswith(".weight") and w.ndim in (2, 4):
            stem = "lora_unet_" + key[len(UNET) : -len(".weight")].replace(".", "_")
            down, up = _pair(tuple(w.shape), g, rank)
            lora.update({f"{stem}.lora_down.weight": down, f"{stem}.lora_up.weight": up})
            lora[f"{stem}.alpha"] = torch.tensor(alpha)
            expected[key] = w + _delta(down, up, alpha / rank, w.shape)
    return save_path(lora, out), expected


def save_path(sd: dict[str, torch.Tensor], out: Path) -> Path:
    save_file(sd, out)
    return out


def test_kohya_ldm_named_unet_lora_fuses_like_diffusers_converts_the_fused_file(tiny, models, tmp_path):
    path, expected = _kohya_file(tiny, tmp_path / "kohya-xl.safetensors")
    lora = read_lora(path, models.unet, models.text_encoder, models.text_encoder_2)
    pristine = {k: v.clone() for k, v in models.unet.state_dict().items()}
    fuser = LoraFuser(models.unet, models.text_encoder, models.text_encoder_2)
    fuser.fuse([(lora, 1.0)])
    want = UNet2DConditionModel.from_single_file(
        {k: v for k, v in expected.items() if k.startswith(UNET)},
        config=str(tiny.skeleton),
        subfolder="unet",
        local_files_only=True,
    ).state_dict()
    got = models.unet.state_dict()
    changed = [k for k in got if not torch.equal(got[k], pristine[k])]
    assert len(changed) == len(lora.layers) > 100  # every UNet Linear/Conv2d, none twice
    for k in got:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=1e-6)
    fuser.restore()
    assert all(torch.equal(v, pristine[k]) for k, v in models.unet.state_dict().items())


def test_kohya_te1_and_te2_keys_reach_clip_l_and_big_g(models, tmp_path):
    g = torch.Generator().manual_seed(4)
    te1, te2 = models.text_encoder, models.text_encoder_2
    q1 = _te_module(te1, "encoder.layers.1.self_attn.q_proj").weight
    fc2 = _te_module(te2, "encoder.layers.2.mlp.fc1").weight
    d1, u1 = _pair(tuple(q1.shape), g)
    d2, u2 = _pair(tuple(fc2.shape), g)
    sd = {
        "lora_te1_text_model_encoder_layers_1_self_attn_q_proj.lora_down.weight": d1,
        "lora_te1_text_model_encoder_layers_1_self_attn_q_proj.lora_up.weight": u1,
        "lora_te2_text_model_encoder_layers_2_mlp_fc1.lora_down.weight": d2,
        "lora_te2_text_model_encoder_layers_2_mlp_fc1.lora_up.weight": u2,
        "lora_te2_text_model_encoder_layers_2_mlp_fc1.alpha": torch.tensor(1.0),
    }
    lora = read_lora(save_path(sd, tmp_path / "te.safetensors"), models.unet, te1, te2)
    before = (q1.clone(), fc2.clone(), {k: v.clone() for k, v in te2.state_dict().items()})
    fuser = LoraFuser(models.unet, te1, te2)
    assert fuser.fuse([(lora, 0.5)]) is True  # a text encoder changed: prompt caches are stale
    torch.testing.assert_close(q1, before[0] + _delta(d1, u1, 0.5, q1.shape), rtol=0, atol=1e-7)
    torch.testing.assert_close(fc2, before[1] + _delta(d2, u2, 0.25 * 0.5, fc2.shape), rtol=0, atol=1e-7)
    assert fuser.restore() is True
    assert torch.equal(q1, before[0])
    assert all(torch.equal(v, before[2][k]) for k, v in te2.state_dict().items())


def test_diffusers_named_lora_with_alpha_below_rank_fuses_at_alpha_over_rank(models, tmp_path):
    """DMD2's layout: `lora_unet_` + diffusers path, rank 64 / alpha 8 there; here rank 4 / alpha 0.5."""
    g = torch.Generator().manual_seed(5)
    unet, te2 = models.unet, models.text_encoder_2
    to_q = unet.get_submodule("down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q").weight
    k_proj = _te_module(te2, "encoder.layers.0.self_attn.k_proj").weight
    d, u = _pair(tuple(to_q.shape), g)
    d2, u2 = _pair(tuple(k_proj.shape), g)
    stem = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"
    peft = "text_encoder_2.text_model.encoder.layers.0.self_attn.k_proj"
    sd = {
        f"{stem}.lora_down.weight": d, f"{stem}.lora_up.weight": u, f"{stem}.alpha": torch.tensor(0.5),
        f"{peft}.lora_A.weight": d2, f"{peft}.lora_B.weight": u2,
    }  # fmt: skip
    lora = read_lora(save_path(sd, tmp_path / "dmd2-like.safetensors"), unet, models.text_encoder, te2)
    before = {n: p.clone() for n, p in [*unet.named_parameters(), *te2.named_parameters()]}
    fuser = LoraFuser(unet, models.text_encoder, te2)
    fuser.fuse([(lora, 1.0)])
    torch.testing.assert_close(
        to_q, before[_name(unet, to_q)] + _delta(d, u, 0.125, to_q.shape), rtol=0, atol=1e-7
    )
    torch.testing.assert_close(
        k_proj, before[_name(te2, k_proj)] + _delta(d2, u2, 1.0, k_proj.shape), rtol=0, atol=1e-7
    )
    fuser.restore()
    after = dict([*unet.named_parameters(), *te2.named_parameters()])
    assert all(torch.equal(after[n], v) for n, v in before.items())


def _te_module(te: torch.nn.Module, path: str) -> torch.nn.Module:
    # transformers >= 5.6 flattened CLIPTextModel; CLIPTextModelWithProjection keeps `text_model.`
    return getattr(te, "text_model", te).get_submodule(path)


def _name(module: torch.nn.Module, param: torch.Tensor) -> str:
    return next(n for n, p in module.named_parameters() if p is param)


def test_an_sd15_lora_on_sdxl_is_refused_naming_the_file(models, tmp_path):
    sd = {"lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.zeros(4, 32),
          "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": torch.zeros(37, 4)}  # fmt: skip
    with pytest.raises(ModelLoadError, match=r"sd15-style\.safetensors.*matches no layer of this SDXL model"):
        read_lora(
            save_path(sd, tmp_path / "sd15-style.safetensors"),
            models.unet,
            models.text_encoder,
            models.text_encoder_2,
        )
