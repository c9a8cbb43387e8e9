"""The bundled SD1.5 skeleton: the real architecture and the real CLIP tokenizer, no weights."""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from naiup.engine.models.load import SD15_SKELETON


def test_bundled_tokenizer_gives_clip_vit_l_ids():
    tok = CLIPTokenizer.from_pretrained(SD15_SKELETON / "tokenizer")
    assert len(tok) == 49408 and tok.model_max_length == 77
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tok(",", add_special_tokens=False).input_ids == [267]


def test_bundled_configs_build_sd15_with_its_exact_parameter_counts():
    def count(module: torch.nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    with torch.device("meta"):  # shapes only: no memory, no weights
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(SD15_SKELETON / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(SD15_SKELETON / "vae"))
        te = CLIPTextModel(CLIPTextConfig.from_pretrained(SD15_SKELETON / "text_encoder"))
    assert (count(unet), count(vae), count(te)) == (859_520_964, 83_653_863, 123_060_480)
