"""`naiup refine` with a tiny random-weight SDXL model at 4x on a real NovelAI file, tiled.

The v-pred model is a model set ([models.xl], the preset's `model = "xl"`) beside an SD1.5 [model]
that is not there: the refine must load the preset's set, not [model]."""

from __future__ import annotations

import json
import shutil

import pytest
import tiny_sdxl
from PIL import Image

from naiup.cli.main import main

# 128 px fixture x4 = 512 px = a 64x64 latent: 3 x 3 tiles of 32 with overlap 16, two UNet steps.
PRESET = """
[presets.xl-tiny]
upscaler = "lanczos"
scale = 4.0
steps = 4
denoise = 0.5
sampler = "euler"
tile_size = 32
overlap = 16
tile_batch_size = 4
seed = "image"
"""


@pytest.mark.parametrize(
    ("which", "prediction", "as_set"), [("folder", "epsilon", False), ("v_folder", "v+zsnr", True)]
)
def test_tiled_4x_sdxl_refine_of_a_real_nai_file(
    tmp_path_factory, tmp_path, capsys, nai_fixtures, which, prediction, as_set
):
    tiny = tiny_sdxl.session_tiny_sdxl(tmp_path_factory)
    work = tmp_path / "downloads"
    work.mkdir()
    src = work / "nai.png"
    shutil.copy(nai_fixtures / "nai3_128_text_stealth_smea_vibe.png", src)
    checkpoint = getattr(tiny, which)
    config = tmp_path / "config.toml"
    model = f'checkpoint = "{checkpoint.as_posix()}"\nlcm_lora = ""\n'
    # As a set, device comes from [model]: a machine setting every set shares.
    tables = (
        f'[model]\ndevice = "cpu"\n[models.xl]\n{model}' if as_set else f'[model]\n{model}device = "cpu"\n'
    )
    preset = PRESET + ('model = "xl"\n' if as_set else "")
    config.write_text(f'[watch]\nfolders = ["{work.as_posix()}"]\n{tables}{preset}')
    rc = main(["--config", str(config), "refine", str(src), str(src), "--preset", "xl-tiny"])
    shown = capsys.readouterr()
    assert rc == 0, shown.err
    out, again = work / "nai.naiup-xl-tiny.png", work / "nai.naiup-xl-tiny (2).png"
    assert out.read_bytes() == again.read_bytes()  # same seed -> same bytes
    with Image.open(out) as o, Image.open(src) as i:
        assert o.size == (512, 512)
        prov = json.loads(o.text["naiup"])
        plain = i.convert("RGB").resize((512, 512), Image.Resampling.LANCZOS)
        assert o.convert("RGB").tobytes() != plain.tobytes()  # the refiner really ran
    assert prov["parameters"]["family"] == "sdxl"
    assert prov["parameters"]["prediction"] == prediction
