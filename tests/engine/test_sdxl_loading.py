"""SDXL checkpoints: family and prediction from the weights, offline single files, clear refusals."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import tiny_sdxl
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from offline_script import run_offline
from PIL import Image
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from naiup.config import ModelConfig, Preset
from naiup.engine.diffusion.refine import Refiner
from naiup.engine.models.load import load_models
from naiup.engine.models.sdxl_single_file import SDXL_SKELETON, sdxl_tokenizers
from naiup.errors import ModelLoadError

CPU = torch.device("cpu")
PRESET = Preset(name="t", steps=4, denoise=0.5, sampler="euler", tile_size=64)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tiny_sdxl.TinySDXL:
    return tiny_sdxl.session_tiny_sdxl(tmp_path_factory)


def _image() -> Image.Image:
    return Image.fromarray(np.random.default_rng(5).integers(0, 256, (64, 96, 3), dtype=np.uint8), "RGB")


def test_bundled_skeleton_builds_sdxl_base_at_its_published_sizes():
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(SDXL_SKELETON / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(SDXL_SKELETON / "vae"))
        te1 = CLIPTextModel(CLIPTextConfig.from_pretrained(SDXL_SKELETON / "text_encoder"))
        te2 = CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(SDXL_SKELETON / "text_encoder_2"))
    counts = [sum(p.numel() for p in m.parameters()) for m in (unet, vae, te1, te2)]
    assert counts == [2_567_463_684, 83_653_863, 123_060_480, 694_659_840]
    assert vae.config.scaling_factor == 0.13025


def test_both_tokenizers_share_the_bpe_and_differ_only_in_padding():
    tok1, tok2 = sdxl_tokenizers()
    ids1 = tok1("a cat", padding="max_length", max_length=8).input_ids
    ids2 = tok2("a cat", padding="max_length", max_length=8).input_ids
    assert ids1 == [49406, 320, 2368, 49407, 49407, 49407, 49407, 49407]
    assert ids2 == [49406, 320, 2368, 49407, 0, 0, 0, 0]


def _same_weights(a, b) -> None:
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        sa, sb = getattr(a, name).state_dict(), getattr(b, name).state_dict()
        assert sa.keys() == sb.keys(), name
        assert all(torch.equal(sa[k], sb[k]) for k in sa), name


def test_single_file_gives_the_folder_weights_and_family(tiny):
    folder = load_models(str(tiny.folder), "", CPU)
    single = load_models(str(tiny.single_file), "", CPU, tiny.skeleton)
    _same_weights(folder, single)
    assert (single.family, single.prediction.label) == ("sdxl", "epsilon")
    assert single.scheduler_config["prediction_type"] == "epsilon"
    assert single.tokenizer_2.pad_token == "!"


def test_v_pred_flags_select_v_prediction_with_zero_snr_betas(tiny):
    single = load_models(str(tiny.v_single_file), "", CPU, tiny.skeleton)
    folder = load_models(str(tiny.v_folder), "", CPU)
    _same_weights(folder, single)
    for m in (single, folder):
        assert m.prediction.label == "v+zsnr"
        assert m.scheduler_config["prediction_type"] == "v_prediction"
        assert m.scheduler_config["rescale_betas_zero_snr"] is True


@pytest.mark.parametrize(
    ("setting", "which", "expected"),
    [
        ("epsilon", "v_single_file", "epsilon"),
        ("v", "single_file", "v+zsnr"),
        ("auto", "single_file", "epsilon"),
    ],
)
def test_prediction_setting_overrides_the_flags(tiny, setting, which, expected):
    m = load_models(str(getattr(tiny, which)), "", CPU, tiny.skeleton, prediction=setting)
    assert m.prediction.label == expected


def test_single_files_load_offline_with_an_empty_hf_cache_and_match_their_folders(tiny, tmp_path):
    """A child process with HF_HUB_OFFLINE=1 and an empty HF_HOME refines with both single files."""
    script = textwrap.dedent(
        f"""
        import numpy as np
        from pathlib import Path
        from PIL import Image
        from naiup.config import ModelConfig, Preset
        from naiup.engine.diffusion.refine import Refiner
        img = Image.fromarray(np.random.default_rng(5).integers(0, 256, (64, 96, 3), dtype=np.uint8), "RGB")
        preset = Preset(name="t", steps=4, denoise=0.5, sampler="euler", tile_size=64)
        for name, f in (("eps", {str(tiny.single_file)!r}), ("v", {str(tiny.v_single_file)!r})):
            model = ModelConfig(checkpoint=f, lcm_lora="", device="cpu")
            r = Refiner(model, config_dir=Path({str(tiny.skeleton)!r}))
            out = r.refine(img, preset, prompt="(cat:1.2)", negative_prompt="", seed=11)
            out.save(Path({str(tmp_path)!r}) / f"{{name}}.png")
        """
    )
    proc, hf_home = run_offline(script, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not any(hf_home.rglob("*.json")), "nothing may be fetched into the HF cache"
    for name, folder in (("eps", tiny.folder), ("v", tiny.v_folder)):
        r = Refiner(ModelConfig(checkpoint=str(folder), lcm_lora="", device="cpu"))
        expected = np.asarray(
            r.refine(_image(), PRESET, prompt="(cat:1.2)", negative_prompt="", seed=11), int
        )
        got = np.asarray(Image.open(tmp_path / f"{name}.png"), dtype=int)
        # Same weights; CPU kernels may round differently for differently allocated tensors (~1e-6).
        assert got.shape == expected.shape and np.abs(got - expected).max() <= 1


def _conv_in(channels: int = 4) -> dict[str, torch.Tensor]:
    return {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(8, channels, 3, 3)}


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"conditioner.embedders.0.model.ln_final.weight": torch.zeros(4)}, "an SDXL refiner"),
        ({"cond_stage_model.model.ln_final.weight": torch.zeros(4)}, r"an SD2\.x model"),
        ({"edm_mean": torch.zeros(4), "cond_stage_model.transformer.x": torch.zeros(1)}, "an EDM model"),
        ({"conditioner.embedders.1.model.ln_final.weight": torch.zeros(4)}, "no size embedding"),
        ({"first_stage_model.x": torch.zeros(1)}, "no cond_stage_model / conditioner"),
    ],
)
def test_other_families_are_refused_naming_the_file_and_what_it_is(tmp_path, extra, reason):
    f = tmp_path / "someone-elses-model.safetensors"
    save_file({**_conv_in(), **extra}, f)
    with pytest.raises(ModelLoadError, match=rf"someone-elses-model\.safetensors.*is .*{reason}"):
        load_models(str(f), "", CPU)


def test_inpainting_unets_are_refused(tmp_path):
    f = tmp_path / "inpaint.safetensors"
    save_file({**_conv_in(9), "conditioner.embedders.1.model.ln_final.weight": torch.zeros(4)}, f)
    with pytest.raises(ModelLoadError, match=r"inpaint\.safetensors.*9 input channels"):
        load_models(str(f), "", CPU)
