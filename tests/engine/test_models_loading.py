"""Model loading: single file offline with an empty HF cache, .ckpt safety, hub ids offline, reloads."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import tiny_sd
import torch
from offline_script import run_offline
from PIL import Image
from safetensors.torch import load_file

from naiup.config import ModelConfig, Preset
from naiup.engine.diffusion.refine import Refiner
from naiup.engine.models.checkpoints import read_state_dict
from naiup.engine.models.load import load_models, model_set_id
from naiup.errors import ModelLoadError

PRESET = Preset(name="t", steps=4, denoise=0.5)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tiny_sd.TinySD:
    return tiny_sd.session_tiny_sd(tmp_path_factory)


def _image() -> Image.Image:
    return Image.fromarray(np.random.default_rng(5).integers(0, 256, (64, 64, 3), dtype=np.uint8), "RGB")


def _refine(refiner: Refiner) -> Image.Image:
    return refiner.refine(_image(), PRESET, prompt="(cat:1.2)", negative_prompt="", seed=11)


def test_single_file_loads_offline_with_an_empty_hf_cache_and_matches_the_folder(tiny, tmp_path):
    """A real child process with HF_HUB_OFFLINE=1 and an empty HF_HOME loads the A1111 single file."""
    script = textwrap.dedent(
        f"""
        import numpy as np
        from pathlib import Path
        from PIL import Image
        from naiup.config import ModelConfig, Preset
        from naiup.engine.diffusion.refine import Refiner
        r = Refiner(ModelConfig(checkpoint={str(tiny.single_file)!r}, lcm_lora={str(tiny.lcm_lora)!r},
                                device="cpu"), config_dir=Path({str(tiny.skeleton)!r}))
        img = Image.fromarray(np.random.default_rng(5).integers(0, 256, (64, 64, 3), dtype=np.uint8), "RGB")
        preset = Preset(name="t", steps=4, denoise=0.5)
        out = r.refine(img, preset, prompt="(cat:1.2)", negative_prompt="", seed=11)
        out.save({str(tmp_path / "single.png")!r})
        """
    )
    proc, hf_home = run_offline(script, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder = Refiner(ModelConfig(checkpoint=str(tiny.folder), lcm_lora=str(tiny.lcm_lora), device="cpu"))
    expected = np.asarray(_refine(folder), dtype=int)
    got = np.asarray(Image.open(tmp_path / "single.png"), dtype=int)
    # Same weights, but CPU kernels may round differently for differently allocated tensors (~1e-6).
    assert got.shape == expected.shape and np.abs(got - expected).max() <= 1
    assert not any(hf_home.rglob("*.json")), "nothing may be fetched into the HF cache"


def test_ckpt_with_only_tensors_loads_like_the_safetensors(tiny, tmp_path):
    sd = load_file(tiny.single_file)
    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": sd, "global_step": 10}, ckpt)
    a = load_models(str(ckpt), "", torch.device("cpu"), tiny.skeleton)
    b = load_models(str(tiny.single_file), "", torch.device("cpu"), tiny.skeleton)
    for name, tensor in a.unet.state_dict().items():
        assert torch.equal(tensor, b.unet.state_dict()[name])


class Payload:
    """Stands for arbitrary pickled objects (e.g. lightning callbacks) in a .ckpt."""


def test_ckpt_with_pickled_objects_is_refused_without_unpickling(tmp_path):
    ckpt = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "callbacks": Payload()}, ckpt)
    with pytest.raises(ModelLoadError, match=r"evil\.ckpt.*convert it once to \.safetensors"):
        read_state_dict(ckpt)


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("missing/model.safetensors", "file not found"),
        ("not-a-model-at-all", "not found: expected"),
        # Our advice, not the libraries' `local_files_only` text.
        ("someone/some-sd15-model", "not in the local Hugging Face cache, and HF_HUB_OFFLINE is set.*unset"),
    ],
)
def test_unloadable_checkpoints_raise_a_model_load_error(spec, reason):
    with pytest.raises(ModelLoadError, match=reason) as info:
        load_models(spec, "", torch.device("cpu"))
    assert "local_files_only" not in str(info.value)


def test_a_non_sd_safetensors_is_refused(tmp_path):
    from safetensors.torch import save_file

    f = tmp_path / "upscaler.safetensors"
    save_file({"conv.weight": torch.zeros(1)}, f)
    with pytest.raises(ModelLoadError, match=r"not an SD1\.5 checkpoint"):
        load_models(str(f), "", torch.device("cpu"))


def test_external_vae_file_replaces_the_checkpoint_vae(tiny, tmp_path):
    from safetensors.torch import save_file

    vae_sd = {k.removeprefix("first_stage_model."): v for k, v in load_file(tiny.single_file).items()
              if k.startswith("first_stage_model.")}  # fmt: skip
    vae_sd = {k: v * 0.5 if k.endswith("conv_out.weight") else v for k, v in vae_sd.items()}
    vae_file = tmp_path / "anime.vae.safetensors"
    save_file(vae_sd, vae_file)
    m = load_models(str(tiny.folder), str(vae_file), torch.device("cpu"), tiny.skeleton)
    base = load_models(str(tiny.folder), "", torch.device("cpu"))
    torch.testing.assert_close(m.vae.decoder.conv_out.weight, base.vae.decoder.conv_out.weight * 0.5)
    torch.testing.assert_close(m.vae.encoder.conv_in.weight, base.vae.encoder.conv_in.weight)


def test_loading_twice_with_the_same_config_is_a_no_op(tiny):
    r = Refiner(ModelConfig(checkpoint=str(tiny.folder), lcm_lora="", device="cpu"))
    r.load()
    unet = r.models.unet
    r.load()
    assert r.models.unet is unet


def test_model_id_is_stable_and_names_the_model_set(tiny):
    a = model_set_id(str(tiny.single_file), "", [])
    assert a == model_set_id(str(tiny.single_file), "", [])
    assert a.startswith("tiny-sd15-")
    assert a != model_set_id(str(tiny.single_file), "", [(str(tiny.kohya_lora), 1.0)])
    assert model_set_id(str(tiny.single_file), "", [(str(tiny.kohya_lora), 0.5)]) != model_set_id(
        str(tiny.single_file), "", [(str(tiny.kohya_lora), 1.0)]
    )


@pytest.mark.parametrize(
    ("spec", "is_hub"),
    [
        ("stable-diffusion-v1-5/stable-diffusion-v1-5", True),
        ("C:/models", False),
        ("./models/x", False),
        ("~/x", False),
        ("models/anime.safetensors", False),
        ("just-a-name", False),
    ],
)
def test_hub_ids_are_told_apart_from_paths(spec, is_hub):
    from naiup.engine.models.load import looks_like_hub_id

    assert looks_like_hub_id(spec) is is_hub
