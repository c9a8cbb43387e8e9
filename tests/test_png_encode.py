"""The parallel PNG encoder: every reader sees the same pixels and text, on any core count.

Its speed against Pillow is measured by bench/png_bench.py, not asserted here: wall-clock ratios flake
on a loaded or one-core runner."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from naiup.metadata.read import read_metadata
from naiup.output import png as png_encode
from naiup.output.png import encode_rgb_png, is_png_keyword


def _image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth gradients plus a little noise: compressible like a refined output, but not trivially."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // max(width, 1), y * 255 // max(height, 1), (x + y) % 256], axis=-1)
    return ((base + rng.integers(0, 8, base.shape)) % 256).astype(np.uint8)


def _chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    pos, out = 8, []
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body), f"bad CRC on {kind!r}"
        out.append((kind, body))
        pos += 12 + length
    return out


@pytest.mark.parametrize("shape", [(1, 1), (1, 700), (700, 1), (37, 53), (2500, 700)])
@pytest.mark.parametrize("level", [0, 1, 6, 9])
def test_pillow_decodes_the_exact_pixels(shape, level):
    pixels = _image(*shape)
    data = encode_rgb_png(pixels, {}, level)
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode == "RGB" and im.size == (shape[1], shape[0])
        np.testing.assert_array_equal(np.asarray(im), pixels)


def test_a_large_image_is_split_into_several_idat_chunks_forming_one_valid_zlib_stream():
    pixels = _image(2500, 700)
    chunks = _chunks(encode_rgb_png(pixels, {}, 1))
    assert [k for k, _ in chunks][:1] == [b"IHDR"] and chunks[-1] == (b"IEND", b"")
    idat = [body for kind, body in chunks if kind == b"IDAT"]
    assert len(idat) >= 3  # 2100 bytes a row, ~2 MiB a band
    raw = zlib.decompress(b"".join(idat))  # checks the header and the Adler-32 of the whole stream
    rows = np.frombuffer(raw, np.uint8).reshape(2500, 1 + 700 * 3)
    assert (rows[:, 0] == 2).all()  # the Up filter on every row


def test_output_does_not_depend_on_the_number_of_cores(monkeypatch):
    pixels = _image(2500, 700)
    monkeypatch.setattr(png_encode.os, "cpu_count", lambda: 1)
    one = encode_rgb_png(pixels, {"k": "v"}, 1)
    monkeypatch.setattr(png_encode.os, "cpu_count", lambda: 8)
    assert encode_rgb_png(pixels, {"k": "v"}, 1) == one


def test_text_is_tEXt_when_latin1_and_iTXt_otherwise_and_precedes_the_pixels():
    text = {"Title": "NovelAI generated image", "Comment": '{"prompt": "猫耳, 1girl"}', "Software": "é"}
    chunks = _chunks(encode_rgb_png(_image(8, 8), text, 1))
    kinds = [k for k, _ in chunks]
    assert kinds[:4] == [b"IHDR", b"tEXt", b"iTXt", b"tEXt"]
    with Image.open(io.BytesIO(encode_rgb_png(_image(8, 8), text, 1))) as im:
        assert im.text == text


def test_our_metadata_reader_reads_the_text_back(tmp_path):
    comment = '{"prompt": "1girl, 猫耳", "steps": 28, "scale": 5.0, "seed": 7, "sampler": "k_euler"}'
    text = {"Software": "NovelAI", "Source": "NovelAI Diffusion V4.5 4BDE2A90", "Comment": comment}
    path = tmp_path / "out.png"
    path.write_bytes(encode_rgb_png(_image(16, 16), text, 1))
    meta = read_metadata(path)
    assert meta.is_novelai and meta.prompt == "1girl, 猫耳" and meta.text_chunks["Comment"] == comment


@pytest.mark.parametrize("key", ["", "k" * 80, "a\0b", "猫"])
def test_keys_a_png_cannot_hold_are_refused(key):
    assert not is_png_keyword(key)
    with pytest.raises(ValueError, match="keyword"):
        encode_rgb_png(_image(2, 2), {key: "v"}, 1)


@pytest.mark.parametrize(
    "pixels", [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 3), np.float32)]
)
def test_anything_but_rgb8_is_refused(pixels):
    with pytest.raises(ValueError, match="uint8"):
        encode_rgb_png(pixels, {}, 1)


def test_size_stays_close_to_pillow_level_1_on_a_real_upscale(nai_fixtures):
    with Image.open(nai_fixtures / "nai3_1024_text_stealth.png") as im:
        big = im.convert("RGB").resize((2048, 2048), Image.Resampling.LANCZOS)
    ours = len(encode_rgb_png(np.asarray(big), {}, 1))
    buf = io.BytesIO()
    big.save(buf, "PNG", compress_level=1)
    assert ours <= 1.05 * len(buf.getvalue())
