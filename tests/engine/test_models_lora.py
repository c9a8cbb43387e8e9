"""LoRAs: our fused Kohya LoRA == diffusers' unfused (peft) LoRA, restore is exact, bad kinds refused."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import tiny_sd
import torch
from diffusers import StableDiffusionPipeline
from PIL import Image

from naiup.config import LoraSpec, ModelConfig, Preset
from naiup.engine.diffusion.refine import Refiner
from naiup.engine.models.load import load_models
from naiup.engine.models.lora import LoraFuser, read_lora
from naiup.errors import ConfigError, ModelLoadError

PRESET = Preset(name="t", steps=4, denoise=0.5)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tiny_sd.TinySD:
    return tiny_sd.session_tiny_sd(tmp_path_factory)


@pytest.fixture(scope="module")
def refiner(tiny) -> Refiner:
    lora_dir = tiny.kohya_lora.parent
    r = Refiner(
        ModelConfig(
            checkpoint=str(tiny.folder), lcm_lora=str(tiny.lcm_lora), lora_dirs=(lora_dir,), device="cpu"
        )
    )
    r.load()
    return r


def _image() -> Image.Image:
    return Image.fromarray(np.random.default_rng(9).integers(0, 256, (64, 64, 3), dtype=np.uint8), "RGB")


def _refine(r: Refiner, prompt: str = "cat") -> bytes:
    return r.refine(_image(), PRESET, prompt=prompt, negative_prompt="", seed=4).tobytes()


def _unet_and_te_outputs(unet, te, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        emb = te(ids).last_hidden_state
        x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
        return unet(x, torch.tensor(499), encoder_hidden_states=emb).sample, emb


def test_fused_kohya_lora_equals_diffusers_unfused_lora(tiny):
    ids = torch.tensor([[49406, 320, 2368, *[49407] * 74]])
    base = load_models(str(tiny.folder), "", torch.device("cpu"))
    base_out, base_emb = _unet_and_te_outputs(base.unet, base.text_encoder, ids)

    ours = load_models(str(tiny.folder), "", torch.device("cpu"))
    LoraFuser(ours.unet, ours.text_encoder).fuse(
        [(read_lora(tiny.kohya_lora, ours.unet, ours.text_encoder), 0.7)]
    )
    fused_out, fused_emb = _unet_and_te_outputs(ours.unet, ours.text_encoder, ids)

    pipe = StableDiffusionPipeline.from_pretrained(tiny.folder, local_files_only=True, safety_checker=None)
    pipe.load_lora_weights(str(tiny.kohya_lora), adapter_name="style")
    pipe.set_adapters(["style"], adapter_weights=[0.7])
    ref_out, ref_emb = _unet_and_te_outputs(pipe.unet, pipe.text_encoder, ids)

    assert (fused_emb - base_emb).abs().max() > 1e-2, "the TE LoRA must change the embeddings"
    assert (fused_out - base_out).abs().max() > 1e-2, "the UNet LoRA must change the prediction"
    torch.testing.assert_close(fused_emb, ref_emb, atol=1e-5, rtol=0)
    torch.testing.assert_close(fused_out, ref_out, atol=1e-5, rtol=0)


def test_restore_gives_back_the_exact_pristine_weights(tiny):
    m = load_models(str(tiny.folder), "", torch.device("cpu"))
    before = {k: v.clone() for k, v in m.unet.state_dict().items()}
    fuser = LoraFuser(m.unet, m.text_encoder)
    assert fuser.fuse([(read_lora(tiny.kohya_lora, m.unet, m.text_encoder), 1.0)]) is True  # TE touched
    assert not torch.equal(m.unet.conv_in.weight, before["conv_in.weight"]) or any(
        not torch.equal(v, before[k]) for k, v in m.unet.state_dict().items()
    )
    fuser.restore()
    assert all(torch.equal(v, before[k]) for k, v in m.unet.state_dict().items())


def test_config_lora_and_prompt_tag_lora_change_the_output_and_switching_restores(refiner, tiny):
    plain = _refine(refiner)
    tagged = _refine(refiner, f"cat <lora:{tiny.kohya_lora.stem}:0.8>")
    assert tagged != plain
    assert _refine(refiner) == plain, "dropping the tag must restore the pristine weights"
    via_config = Refiner(
        replace(refiner.model, loras=(LoraSpec(str(tiny.kohya_lora), 0.8),), lora_dirs=()), refiner.device
    )
    assert _refine(via_config) == tagged, "config LoRA and prompt tag at the same weight are the same model"
    assert via_config.model_id != refiner.model_id


def test_unknown_lora_tag_names_the_searched_folders(refiner):
    with pytest.raises(ConfigError, match="<lora:nope> from the prompt not found"):
        _refine(refiner, "cat <lora:nope:1>")


@pytest.mark.parametrize(
    ("writer", "kind"), [(tiny_sd.write_loha, "LoHa"), (tiny_sd.write_lora_mid, "lora_mid")]
)
def test_unsupported_lora_kinds_are_refused_naming_the_file(refiner, tmp_path, writer, kind):
    f = writer(tmp_path / f"bad-{kind}.safetensors")
    with pytest.raises(ModelLoadError, match=rf"bad-{kind}\.safetensors: unsupported LoRA kind: .*{kind}"):
        read_lora(f, refiner.models.unet, refiner.models.text_encoder)


def test_lora_for_another_architecture_is_refused(refiner, tmp_path):
    from safetensors.torch import save_file

    f = tmp_path / "sdxl.safetensors"
    key = "lora_unet_down_blocks_9_attentions_0_proj_in"
    save_file({f"{key}.lora_down.weight": torch.zeros(4, 32), f"{key}.lora_up.weight": torch.zeros(32, 4)}, f)
    with pytest.raises(ModelLoadError, match="matches no layer"):
        read_lora(f, refiner.models.unet, refiner.models.text_encoder)


def test_peft_named_lora_fuses_like_the_same_kohya_lora(tiny, tmp_path):
    from safetensors.torch import save_file

    m = load_models(str(tiny.folder), "", torch.device("cpu"))
    kohya = read_lora(tiny.kohya_lora, m.unet, m.text_encoder)
    # diffusers/peft naming: dotted module paths, lora_A/lora_B, no alpha (scale 1: fold it into B)
    peft = {}
    for layer in kohya.layers:
        peft[f"{layer.target}.lora_A.weight"] = layer.down
        peft[f"{layer.target}.lora_B.weight"] = layer.up * layer.scale
    f = tmp_path / "peft.safetensors"
    save_file({k: v.contiguous() for k, v in peft.items()}, f)

    a = load_models(str(tiny.folder), "", torch.device("cpu"))
    LoraFuser(a.unet, a.text_encoder).fuse([(kohya, 1.0)])
    LoraFuser(m.unet, m.text_encoder).fuse([(read_lora(f, m.unet, m.text_encoder), 1.0)])
    for name, tensor in a.unet.state_dict().items():
        torch.testing.assert_close(m.unet.state_dict()[name], tensor, atol=1e-6, rtol=0)
    for name, tensor in a.text_encoder.state_dict().items():
        torch.testing.assert_close(m.text_encoder.state_dict()[name], tensor, atol=1e-6, rtol=0)


def test_config_loras_may_be_bare_names_in_the_lora_folders(tiny):
    from naiup.engine.models.load import resolve_lora_file

    folder = tiny.kohya_lora.parent
    assert resolve_lora_file(tiny.kohya_lora.stem, (folder,)) == tiny.kohya_lora
    with pytest.raises(ModelLoadError, match="LoRA file not found"):
        resolve_lora_file("no-such-lora", (folder,))


def test_lora_with_shapes_of_another_model_is_refused(refiner, tmp_path):
    from safetensors.torch import save_file

    f = tmp_path / "sd2-style.safetensors"
    key = "lora_unet_down_blocks_0_attentions_0_proj_in"  # exists here, but 64 wide in that model
    save_file({f"{key}.lora_down.weight": torch.zeros(4, 64), f"{key}.lora_up.weight": torch.zeros(64, 4)}, f)
    with pytest.raises(ModelLoadError, match=r"sd2-style\.safetensors: .*shapes for another model"):
        read_lora(f, refiner.models.unet, refiner.models.text_encoder)


@pytest.mark.parametrize(
    ("down", "up", "alpha"),
    [
        ((4, 32), (32, 4), (2,)),  # alpha must be one number
        ((0, 32), (32, 0), None),  # rank 0
        ((4, 32), (32,), None),  # 1-D up
        ((), (32, 4), None),  # scalar down
    ],
)
def test_damaged_lora_layers_are_a_model_load_error(refiner, tmp_path, down, up, alpha):
    from safetensors.torch import save_file

    key = "lora_unet_down_blocks_0_attentions_0_proj_in"  # a 32x32 1x1 conv in the tiny model
    sd = {f"{key}.lora_down.weight": torch.zeros(down), f"{key}.lora_up.weight": torch.zeros(up)}
    if alpha is not None:
        sd[f"{key}.alpha"] = torch.ones(alpha)
    f = tmp_path / "damaged.safetensors"
    save_file(sd, f)
    with pytest.raises(ModelLoadError, match=r"damaged\.safetensors: LoRA layer .*(malformed|shapes)"):
        read_lora(f, refiner.models.unet, refiner.models.text_encoder)


def test_a_lora_file_replaced_on_disk_is_read_again(tiny, tmp_path):
    import shutil

    lora_dir = tmp_path / "Lora"
    lora_dir.mkdir()
    shutil.copy(tiny.kohya_lora, lora_dir / "style.safetensors")
    r = Refiner(replace(_config(tiny), lora_dirs=(lora_dir,)))
    first = _refine(r, "cat <lora:style:1.0>")
    assert _refine(r, "cat <lora:style:1.0>") == first  # cached
    tiny_sd.write_kohya_lora(tiny.folder, lora_dir / "style.safetensors", seed=123)  # the user updates it
    assert _refine(r, "cat") != first
    assert _refine(r, "cat <lora:style:1.0>") != first, "the new file's weights must be used"


def _config(tiny) -> ModelConfig:
    return ModelConfig(checkpoint=str(tiny.folder), lcm_lora=str(tiny.lcm_lora), device="cpu")
