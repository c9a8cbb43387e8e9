"""`naiup refine` end to end with a real (tiny, random-weight) SD1.5 model: no stand-ins anywhere.

The whole chain runs: config file -> Engine -> lanczos upscale -> Refiner (LCM-LoRA fused, our own loop,
VAE) -> job path -> PNG beside the original. One UNet step per image (steps 2 x denoise 0.5) on 64x64.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import nai_writer
import pytest
import tiny_sd
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from naiup.cli.main import main

# One UNet step: int(steps * denoise) = 1. lanczos keeps the upscale out of the way of the refiner.
PRESETS = """
[presets.tiny]
upscaler = "lanczos"
scale = 2.0
steps = 2
denoise = 0.5
seed = "image"

[presets.tiny-lora]
upscaler = "lanczos"
scale = 2.0
steps = 2
denoise = 0.5
seed = "image"
prompt = "(masterpiece, best quality, highres:1.2) <lora:style:0.8>"
"""


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tiny_sd.TinySD:
    return tiny_sd.session_tiny_sd(tmp_path_factory)


@pytest.fixture(scope="session")
def lora_dir(tiny: tiny_sd.TinySD, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An A1111-style `models/Lora` folder holding the Kohya LoRA as `style.safetensors`."""
    folder = tmp_path_factory.mktemp("Lora")
    shutil.copy(tiny.kohya_lora, folder / "style.safetensors")
    return folder


def write_config(path: Path, checkpoint: Path, tiny: tiny_sd.TinySD, lora_dir: Path) -> Path:
    path.write_text(
        f'[watch]\nfolders = ["{path.parent.as_posix()}"]\n'
        f'[model]\ncheckpoint = "{checkpoint.as_posix()}"\nlcm_lora = "{tiny.lcm_lora.as_posix()}"\n'
        f'lora_dirs = ["{lora_dir.as_posix()}"]\ndevice = "cpu"\n' + PRESETS
    )
    return path


def refine(config: Path, *files: Path, preset: str = "tiny") -> int:
    return main(["--config", str(config), "refine", *map(str, files), "--preset", preset])


def test_refine_with_a_real_tiny_model(tiny, lora_dir, tmp_path, capsys, caplog):
    work = tmp_path / "downloads"
    work.mkdir()
    config = write_config(tmp_path / "config.toml", tiny.folder, tiny, lora_dir)
    a = nai_writer.write_nai_png(work / "a.png", (64, 64), seed=4321, pixel_seed=1, stealth=True)
    original = a.read_bytes()
    caplog.set_level(logging.INFO, logger="naiup.engine.diffusion.refine")

    # a twice in one run: the second is "(2)", from the same warm engine, and must not drift.
    rc, shown = refine(config, a, a), capsys.readouterr()
    assert rc == 0, shown.err
    loads = [r for r in caplog.records if r.getMessage().startswith("model loaded")]
    assert len(loads) == 1, "the engine must load the model once for several files"
    out, again = work / "a.naiup-tiny.png", work / "a.naiup-tiny (2).png"
    assert shown.out.splitlines() == [str(out), str(again)]
    # Only our own bar: the libraries' per-component loading bars stay off the terminal.
    assert "Loading pipeline components" not in shown.err and "Loading weights" not in shown.err
    assert sorted(p.name for p in work.iterdir()) == ["a.naiup-tiny (2).png", "a.naiup-tiny.png", "a.png"]
    assert a.read_bytes() == original
    assert again.read_bytes() == out.read_bytes()

    with Image.open(out) as o, Image.open(a) as i:
        assert o.size == (128, 128) and o.mode == "RGB"
        for key in ("Title", "Description", "Software", "Source", "Comment"):
            assert o.text[key] == i.text[key]
        prov = json.loads(o.text["naiup"])
        params = o.text["parameters"]
        refined = o.convert("RGB")
        plain = i.convert("RGB").resize((128, 128), Image.Resampling.LANCZOS)
    assert prov["seed"] == 4321 and prov["preset"]["name"] == "tiny"
    assert (
        prov["model_id"].startswith("lanczos+tiny-") and prov["parameters"]["refiner_id"] in prov["model_id"]
    )
    assert "Seed: 4321" in params and "Steps: 2" in params and "Denoising strength: 0.5" in params
    # The refiner really ran: the result is not the plain lanczos enlargement.
    assert refined.tobytes() != plain.tobytes()

    # A fresh process-equivalent run (new engine, model loaded again): same seed -> same bytes.
    assert refine(config, a) == 0
    third = work / "a.naiup-tiny (3).png"
    assert capsys.readouterr().out.strip() == str(third)
    assert third.read_bytes() == out.read_bytes()


def test_lora_tag_in_the_preset_prompt_changes_the_output(tiny, lora_dir, tmp_path, capsys):
    config = write_config(tmp_path / "config.toml", tiny.folder, tiny, lora_dir)
    src = nai_writer.write_nai_png(tmp_path / "c.png", (64, 64), seed=5, pixel_seed=3)
    assert refine(config, src, preset="tiny") == 0
    assert refine(config, src, preset="tiny-lora") == 0, capsys.readouterr().err
    with (
        Image.open(tmp_path / "c.naiup-tiny.png") as plain,
        Image.open(tmp_path / "c.naiup-tiny-lora.png") as lora,
    ):
        assert plain.convert("RGB").tobytes() != lora.convert("RGB").tobytes()
        prov = json.loads(lora.text["naiup"])
        plain_id = json.loads(plain.text["naiup"])["model_id"]
    # The tag is resolved through lora_dirs, and the fused set is part of the model id.
    assert prov["model_id"] != plain_id
    assert prov["parameters"]["prompt"].endswith("<lora:style:0.8>")


@pytest.fixture(scope="session")
def nan_model(tiny: tiny_sd.TinySD, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with one UNet output weight poisoned: every step yields NaN."""
    folder = tmp_path_factory.mktemp("nan") / "tiny-nan"
    shutil.copytree(tiny.folder, folder)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    sd = load_file(weights)
    sd["conv_out.bias"] = torch.full_like(sd["conv_out.bias"], float("nan"))
    save_file(sd, weights)
    return folder


def test_nan_guard_is_a_clear_error_exit_1_and_no_output(tiny, lora_dir, nan_model, tmp_path, capsys):
    work = tmp_path / "downloads"
    work.mkdir()
    config = write_config(tmp_path / "config.toml", nan_model, tiny, lora_dir)
    src = nai_writer.write_nai_png(work / "d.png", (64, 64))
    original = src.read_bytes()
    assert refine(config, src) == 1
    err = capsys.readouterr().err
    assert f"error: {src}: " in err and "NaN" in err and "no output was written" in err
    assert "Traceback" not in err
    assert [p.name for p in work.iterdir()] == ["d.png"]  # no output, no temp left behind
    assert src.read_bytes() == original


@pytest.mark.parametrize("kind", ["stealth-png", "webp"])
def test_nai_data_held_only_in_alpha_or_exif_is_carried_as_text(kind, tmp_path, capsys):
    """Outputs are RGB PNGs: NovelAI data that lived in the alpha bits or EXIF must become text chunks."""
    config = tmp_path / "config.toml"
    config.write_text('[presets.plain]\nupscaler = "lanczos"\nrefine = false\n')
    if kind == "webp":
        src = nai_writer.write_nai_webp(tmp_path / "e.webp", (64, 64), seed=99)
    else:
        src = nai_writer.write_nai_png(tmp_path / "e.png", (64, 64), seed=99, text=False, stealth=True)
    assert refine(config, src, preset="plain") == 0, capsys.readouterr().err
    with Image.open(tmp_path / "e.naiup-plain.png") as out:
        comment = json.loads(out.text["Comment"])
        assert out.mode == "RGB" and out.text["Software"] == "NovelAI"
        assert out.text["Description"] == "1girl, solo" and out.text["Source"] == nai_writer.SOURCE
    assert comment["seed"] == 99 and comment["uc"] == "lowres, bad anatomy"
