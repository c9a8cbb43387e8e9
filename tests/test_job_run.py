"""run_job: one file in, one file out beside it, never overwriting, metadata carried, provenance added."""

from __future__ import annotations

import errno
import hashlib
import json
import shutil
import struct
import zlib
from dataclasses import replace

import numpy as np
import pytest
import torch
from nai_writer import write_nai_png
from PIL import Image

from naiup.config import BUILTIN_PRESETS, Config, ModelConfig, OutputConfig, Preset
from naiup.engine import Engine
from naiup.errors import ConfigError, InputError, OutputError
from naiup.job import is_naiup_output, output_candidates, run_job
from naiup.output import atomic

CPU = torch.device("cpu")
LZ = Preset(name="lz", upscaler="lanczos", refine=False)
CONFIG = Config()


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(ModelConfig(device="cpu"), CPU)


def _chunks(path) -> list[tuple[bytes, bytes]]:
    data = path.read_bytes()
    pos, out = 8, []
    while pos < len(data):
        length, ctype = struct.unpack(">I4s", data[pos : pos + 8])
        out.append((ctype, data[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return out


def _provenance(path) -> dict:
    return json.loads(Image.open(path).text["naiup"])


def test_real_nai_file_gets_one_realcugan_output_beside_it(tmp_path, nai_fixtures, engine):
    src = tmp_path / "nai.png"
    shutil.copy(nai_fixtures / "nai3_128_text_stealth_smea_vibe.png", src)
    before = src.read_bytes()
    result = run_job(src, BUILTIN_PRESETS["upscale-2x"], engine, CONFIG)
    assert result.output == tmp_path / "nai.naiup-upscale-2x.png"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nai.naiup-upscale-2x.png", "nai.png"]
    assert src.read_bytes() == before
    with Image.open(result.output) as out, Image.open(src) as orig:
        assert out.mode == "RGB" and out.size == (256, 256)
        for key in ("Title", "Description", "Software", "Source", "Comment", "Generation time"):
            assert out.text[key] == orig.text[key]
        assert "Size: 256x256" in out.text["parameters"]
    prov = _provenance(result.output)
    assert prov["source_sha256"] == hashlib.sha256(before).hexdigest()
    assert prov["preset"]["name"] == "upscale-2x" and prov["source_name"] == "nai.png"
    assert prov["model_id"].startswith("realcugan-2x@3a26f0dfd231") and prov["version"]
    assert is_naiup_output(result.output) and not is_naiup_output(src)


def test_second_run_never_overwrites(tmp_path, engine):
    src = write_nai_png(tmp_path / "img.png", (24, 16))
    first = run_job(src, LZ, engine, CONFIG).output
    first_bytes = first.read_bytes()
    second = run_job(src, LZ, engine, CONFIG).output
    third = run_job(src, LZ, engine, CONFIG).output
    assert (first.name, second.name, third.name) == (
        "img.naiup-lz.png",
        "img.naiup-lz (2).png",
        "img.naiup-lz (3).png",
    )
    assert first.read_bytes() == first_bytes


def test_a_users_file_at_the_output_name_is_left_alone(tmp_path, engine):
    src = write_nai_png(tmp_path / "img.png", (24, 16))
    (tmp_path / "img.naiup-lz.png").write_bytes(b"mine")
    out = run_job(src, LZ, engine, CONFIG).output
    assert out.name == "img.naiup-lz (2).png" and (tmp_path / "img.naiup-lz.png").read_bytes() == b"mine"


def test_non_latin1_text_survives_as_itxt(tmp_path, nai_fixtures, engine):
    src = tmp_path / "jp.png"
    shutil.copy(nai_fixtures / "nai45_full_832x1216_itxt_stealth.png", src)
    out = run_job(src, replace(LZ, scale=0.25), engine, CONFIG).output
    with Image.open(out) as o, Image.open(src) as i:
        assert o.text["Description"] == i.text["Description"]
    assert any(t == b"iTXt" and d.startswith(b"Description\0") for t, d in _chunks(out))


def test_output_has_no_alpha_so_no_stealth_payload(tmp_path, engine):
    src = write_nai_png(tmp_path / "a.png", (16, 16), rgba=True)
    out = run_job(src, LZ, engine, CONFIG).output
    ihdr = _chunks(out)[0][1]
    assert ihdr[9] == 2  # PNG colour type 2 = RGB, no alpha channel


class _FailIfCalled:
    def _fail(self, *args, **kwargs):
        raise AssertionError("model work started for an input that should have been refused")

    load = model_id = idle = process = _fail


def test_too_large_output_is_refused_before_any_model_work(tmp_path):
    src = write_nai_png(tmp_path / "big.png", (100, 100))
    config = replace(CONFIG, output=OutputConfig(max_output_megapixels=0.03))
    with pytest.raises(InputError, match="max_output_megapixels") as err:
        run_job(src, LZ, _FailIfCalled(), config)
    assert "200x200" in str(err.value) and str(src) in str(err.value)
    assert [p.name for p in tmp_path.iterdir()] == ["big.png"]


def test_a_folder_that_takes_no_new_file_is_refused_before_any_model_work(tmp_path, monkeypatch):
    # Tests run as root, where a chmod'ed folder stays writable, so the read-only file system comes
    # from the one seam every write of naiup.output.atomic goes through (the check's and the
    # publish's): this proves the check runs before the engine and says why; that the check really
    # creates a file in the folder is test_job_atomic's test of check_writable.
    src = write_nai_png(tmp_path / "in.png", (16, 16))

    def read_only(tmp, data):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp))

    monkeypatch.setattr(atomic, "_write_synced", read_only)
    with pytest.raises(OutputError, match="cannot write beside the original: the folder is read-only") as err:
        run_job(src, LZ, _FailIfCalled(), CONFIG)
    assert err.value.transient is False  # the daemon fails the file at once, no retries
    assert [p.name for p in tmp_path.iterdir()] == ["in.png"]


@pytest.mark.parametrize("content", [b"", b"\x89PNG\r\n\x1a\n" + b"\0" * 40, b"not an image"])
def test_corrupt_input_is_an_input_error_naming_the_file(tmp_path, content):
    src = tmp_path / "broken.png"
    src.write_bytes(content)
    with pytest.raises(InputError) as err:
        run_job(src, LZ, _FailIfCalled(), CONFIG)
    assert str(err.value).startswith(str(src))
    assert [p.name for p in tmp_path.iterdir()] == ["broken.png"]


@pytest.mark.parametrize("mode", ["LAB", "I;16B"])
def test_an_unusable_colour_mode_is_an_input_error_naming_the_file(tmp_path, mode):
    src = tmp_path / "odd.tif"
    Image.new(mode, (8, 8)).save(src)
    with pytest.raises(InputError, match=f"unsupported colour mode {mode}") as err:
        run_job(src, LZ, _FailIfCalled(), CONFIG)
    assert str(err.value).startswith(str(src))


def test_truncated_real_png_is_an_input_error(tmp_path, nai_fixtures):
    src = tmp_path / "cut.png"
    src.write_bytes((nai_fixtures / "nai3_640_text_stealth.png").read_bytes()[:50_000])
    with pytest.raises(InputError, match=r"cut\.png"):
        run_job(src, LZ, _FailIfCalled(), CONFIG)


def test_missing_input_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        run_job(tmp_path / "gone.png", LZ, _FailIfCalled(), CONFIG)


class _SeedRefiner:
    model_id, family, prediction, accepts_pixels = "seed-noise", "sd15", "epsilon", False
    controlnet_id = controlnet_name = ""

    def __init__(self, model, device):
        pass

    def load(self):
        pass

    def model_id_for(self, prompt, negative_prompt=""):
        return self.model_id

    def refine(self, image, preset, *, prompt, negative_prompt, seed, progress=None, regions=()):
        noise = np.random.default_rng(seed).integers(0, 8, (image.height, image.width, 3))
        return Image.fromarray(((np.asarray(image, dtype=np.int64) + noise) % 256).astype(np.uint8))


def test_same_input_and_seed_give_identical_output_bytes(tmp_path):
    src = write_nai_png(tmp_path / "s.png", (32, 32), seed=99)
    engine = Engine(ModelConfig(device="cpu"), CPU, refiner_factory=_SeedRefiner)
    preset = Preset(name="r", upscaler="lanczos", refine=True)
    a, b = (run_job(src, preset, engine, CONFIG).output for _ in range(2))
    other = run_job(src, replace(preset, seed=100), engine, CONFIG).output
    idat = [[d for t, d in _chunks(p) if t == b"IDAT"] for p in (a, b, other)]
    assert idat[0] == idat[1] != idat[2]
    assert a.read_bytes() == b.read_bytes()
    assert _provenance(a)["seed"] == 99 and "Seed: 99" in Image.open(a).text["parameters"]


def test_an_upscale_shows_the_images_own_prompt_as_a_refine_would(tmp_path, engine):
    # The A1111 `parameters` chunk of an upscale-only output used to start with an empty prompt line.
    src = write_nai_png(
        tmp_path / "p.png",
        (16, 16),
        prompt="{best quality}, 1girl, furina_(genshin) <lora:x:1>",
        uc="lowres, [bad hands]",
        characters=[("{{smile}}", "frown", (0.5, 0.5))],
    )
    upscaled = run_job(src, LZ, engine, CONFIG).output
    lines = Image.open(upscaled).text["parameters"].split("\n")
    assert lines[:2] == [
        "(best quality:1.05), 1girl, furina_\\(genshin\\), (smile:1.1025)",  # its <lora:> is dropped
        "Negative prompt: lowres, (bad hands:0.9524)",
    ]
    assert lines[2].startswith("Size: 32x32")
    assert "prompt" not in _provenance(upscaled)["parameters"]  # provenance claims no prompt was used
    # A refine on the image's own prompt alone writes the same two lines.
    own = Preset(
        name="r",
        upscaler="lanczos",
        refine=True,
        prompt="",
        negative_prompt="",
        use_image_prompt=True,
        cfg=2.0,
        regions="off",  # with positioned characters "auto" writes the background's prompt instead
    )
    refined = run_job(
        src, own, Engine(ModelConfig(device="cpu"), CPU, refiner_factory=_SeedRefiner), CONFIG
    ).output
    assert Image.open(refined).text["parameters"].split("\n")[:2] == lines[:2]


def test_output_names_follow_the_template(tmp_path):
    src = tmp_path / "x.webp"
    names = output_candidates(src, LZ, "{stem}-{preset}.png")
    assert [next(names).name for _ in range(3)] == ["x-lz.png", "x-lz (2).png", "x-lz (3).png"]
    for bad in ("{nope}.png", "sub/{stem}.png", "{stem}.webp"):
        with pytest.raises(ConfigError, match=r"output\.name"):
            next(output_candidates(src, LZ, bad))


def test_provenance_check_is_cheap_and_robust(tmp_path):
    assert not is_naiup_output(tmp_path / "absent.png")
    (tmp_path / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n" + struct.pack(">I4s", 10**9, b"IDAT"))
    assert not is_naiup_output(tmp_path / "junk.png")
    raw = b"\x89PNG\r\n\x1a\n"
    body = b"naiup\0{}"
    raw += struct.pack(">I4s", len(body), b"tEXt") + body + struct.pack(">I", zlib.crc32(b"tEXt" + body))
    (tmp_path / "ours.png").write_bytes(raw)
    assert is_naiup_output(tmp_path / "ours.png")


def test_png_compress_level_comes_from_the_config(tmp_path, engine):
    src = write_nai_png(tmp_path / "c.png", (48, 48), rgba=False)
    stored = replace(CONFIG, output=replace(CONFIG.output, png_compress_level=0))
    raw = run_job(src, LZ, engine, stored).output
    packed = run_job(src, LZ, engine, CONFIG).output
    assert raw.stat().st_size > packed.stat().st_size
    assert np.array_equal(np.asarray(Image.open(raw)), np.asarray(Image.open(packed)))
