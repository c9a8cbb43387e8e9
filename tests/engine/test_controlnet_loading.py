"""ControlNet loading: diffusers folder, diffusers-named file, original (LDM) file; family checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tiny_controlnet
import tiny_sd
import torch
from diffusers import ControlNetModel, UNet2DConditionModel

from naiup.config import ModelConfig
from naiup.engine.diffusion.refine import Refiner
from naiup.engine.models.controlnet import CONTROLNET_SKELETONS, controlnet_family, load_controlnet
from naiup.errors import ModelLoadError


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tiny_controlnet.TinyControlNets:
    return tiny_controlnet.session_tiny_controlnets(tmp_path_factory)


def _unet_config(model: Path):
    return UNet2DConditionModel.load_config(model / "unet")


class _Config(dict):
    __getattr__ = dict.__getitem__


def _load(spec: Path, family: str, cn: tiny_controlnet.TinyControlNet, **kw) -> ControlNetModel:
    return load_controlnet(str(spec), family, _Config(_unet_config(cn.model)), **kw)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
@pytest.mark.parametrize("kind", ["ldm_file", "bare_ldm_file", "diffusers_file"])
def test_single_files_load_offline_equal_to_the_folder(tiny, family, kind):
    cn = getattr(tiny, family)
    folder = _load(cn.folder, family, cn)
    single = _load(getattr(cn, kind), family, cn, config_dir=cn.skeleton)
    assert not any(p.is_meta for p in single.parameters())
    _same_weights(single, folder)
    # The residual heads carry weights (a zero head would make every control test pass vacuously).
    assert folder.controlnet_mid_block.weight.abs().sum() > 0


def test_the_ldm_file_is_what_diffusers_itself_reads_as_an_original_controlnet(tiny):
    # diffusers' own converter is an independent reader of the original layout (it lacks SDXL's
    # label_emb, hence SD1.5 only): it must see the same weights in our test file.
    cn = tiny.sd15
    theirs = ControlNetModel.from_single_file(
        str(cn.ldm_file), config=str(cn.skeleton / "controlnet"), local_files_only=True
    )
    _same_weights(theirs, _load(cn.ldm_file, "sd15", cn, config_dir=cn.skeleton))


@pytest.mark.parametrize(
    ("family", "model_family", "theirs", "ours"),
    [("sdxl", "sd15", "SDXL", "SD1.5"), ("sd15", "sdxl", "SD1.5", "SDXL")],
)
@pytest.mark.parametrize("kind", ["folder", "ldm_file", "diffusers_file"])
def test_a_family_mismatch_is_refused_naming_both(tiny, family, model_family, theirs, ours, kind):
    cn = getattr(tiny, family)
    spec = getattr(cn, kind)
    with pytest.raises(ModelLoadError) as err:
        _load(spec, model_family, getattr(tiny, model_family))
    text = str(err.value)
    assert spec.name in text
    assert f"is an {theirs} ControlNet" in text and f"checkpoint is {ours}" in text


def test_the_refiner_refuses_a_mismatched_controlnet_at_load(tiny):
    model = ModelConfig(
        checkpoint=str(tiny.sd15.model), lcm_lora="", device="cpu", controlnet=str(tiny.sdxl.folder)
    )
    with pytest.raises(
        ModelLoadError, match=r"is an SDXL ControlNet, but the model set's checkpoint is SD1\.5"
    ):
        Refiner(model).load()


def test_a_controlnet_of_the_same_family_but_other_shapes_is_refused(tiny, tmp_path):
    # An SD1.5-family ControlNet whose context width differs (as an SD2.x one's does) cannot add its
    # residuals to this UNet.
    cn = tiny.sd15
    config = json.loads((cn.folder / "config.json").read_text())
    config["cross_attention_dim"] = 48
    other = tmp_path / "other"
    with torch.device("cpu"):
        ControlNetModel.from_config(config).save_pretrained(other)
    with pytest.raises(
        ModelLoadError, match=r"context width \(cross_attention_dim\) is 48, the UNet's is 32"
    ):
        _load(other, "sd15", cn)


def test_files_that_are_not_controlnets_say_so(tiny, tmp_path):
    cn = tiny.sd15
    lora = tiny_sd.write_loha(tmp_path / "loha.safetensors")
    with pytest.raises(ModelLoadError, match="is not a ControlNet"):
        _load(lora, "sd15", cn, config_dir=cn.skeleton)
    with pytest.raises(ModelLoadError, match="naiup does not download ControlNets"):
        _load(tmp_path / "missing.safetensors", "sd15", cn)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ModelLoadError, match="expected a ControlNet folder"):
        _load(tmp_path / "notes.txt", "sd15", cn)


def test_a_truncated_ldm_file_names_the_missing_weight(tiny, tmp_path):
    from safetensors.torch import load_file, save_file

    sd = load_file(tiny.sd15.ldm_file)
    sd.pop("control_model.zero_convs.3.0.weight")
    save_file(sd, tmp_path / "cut.safetensors")
    with pytest.raises(ModelLoadError, match=r"zero_convs\.3\.0\.weight"):
        _load(tmp_path / "cut.safetensors", "sd15", tiny.sd15, config_dir=tiny.sd15.skeleton)


def test_family_is_read_from_the_size_embedding():
    assert controlnet_family(["input_hint_block.0.weight", "input_blocks.0.0.weight"]) == "sd15"
    assert controlnet_family(["control_model.label_emb.0.0.weight"]) == "sdxl"
    assert controlnet_family(["add_embedding.linear_1.weight"]) == "sdxl"


@pytest.mark.parametrize(("family", "params"), [("sd15", 361_279_120), ("sdxl", 1_251_014_160)])
def test_bundled_configs_are_the_base_unets_encoder_with_the_standard_hint_encoder(family, params):
    # About the published sizes: ~361 M for the SD1.5 ControlNet 1.1 models, ~1.25 B for xinsir's SDXL tile.
    unet_config = UNet2DConditionModel.load_config(CONTROLNET_SKELETONS[family].parent / "unet")
    with torch.device("meta"):
        expected = ControlNetModel.from_unet(
            UNet2DConditionModel.from_config(unet_config), load_weights_from_unet=False
        )
        ours = ControlNetModel.from_config(ControlNetModel.load_config(CONTROLNET_SKELETONS[family]))

    def plain(config) -> dict:  # tuples as the JSON lists they are saved as; no private keys
        return {k: v for k, v in json.loads(json.dumps(dict(config))).items() if not k.startswith("_")}

    assert plain(ours.config) == plain(expected.config)
    assert sum(p.numel() for p in ours.parameters()) == params


def test_a_file_that_does_not_fit_the_bundled_layout_says_how_to_load_it(tiny, tmp_path):
    # Without a skeleton of its own, a single file is read with the bundled (real-size) config: the
    # tiny file does not fit it, which must be a clear refusal, not a crash or a partial load.
    (tmp_path / "controlnet").mkdir()  # a skeleton folder without a ControlNet config: bundled one used
    for config_dir in (None, tmp_path):
        with pytest.raises(
            ModelLoadError, match=r"does not fit the SD1\.5 ControlNet layout .*diffusers folder"
        ):
            _load(tiny.sd15.diffusers_file, "sd15", tiny.sd15, config_dir=config_dir)
