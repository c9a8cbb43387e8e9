"""Bad input: each gives a specific InputError or "no metadata"; nothing hangs or crashes.

The module timeout only catches a hang: how fast each is refused is measured by bench/metadata_bench.py."""

from __future__ import annotations

import gzip
import io
import os
import struct
import zlib
from pathlib import Path

import hostile_files
import nai_writer
import numpy as np
import pytest
from PIL import Image

from naiup.errors import InputError
from naiup.metadata.read import MetadataFormat, MetadataSource, read_image, read_metadata

pytestmark = pytest.mark.timeout(20)


def _expect_input_error(path: Path, reason: str) -> None:
    with pytest.raises(InputError) as info:
        read_image(path)
    assert str(path) in str(info.value) and reason in info.value.reason


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    _expect_input_error(path, "empty file")


def test_missing_file(tmp_path: Path) -> None:
    _expect_input_error(tmp_path / "gone.png", "cannot read file")


def test_non_image_with_png_name(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("this is a text file, not a picture\n")
    _expect_input_error(path, "not an image")


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_png(tmp_path: Path, keep: float) -> None:
    full = nai_writer.write_nai_png(tmp_path / "full.png", (128, 128), stealth=True)
    data = full.read_bytes()
    cut = tmp_path / "cut.png"
    cut.write_bytes(data[: int(len(data) * keep)])
    _expect_input_error(cut, "truncated")


def test_truncated_header(tmp_path: Path) -> None:
    path = tmp_path / "head.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    _expect_input_error(path, "")


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("size", [(12_000, 10_000), (100_000, 100_000)])
def test_pixel_bomb(tmp_path: Path, size: tuple[int, int]) -> None:
    # 120 MP is over our cap but under PIL's own error threshold; 10 GP trips PIL's too.
    _expect_input_error(hostile_files.pixel_bomb_png(tmp_path / "bomb.png", *size), "pixel bomb")


def _no_metadata_with_problem(path: Path, problem: str) -> None:
    meta = read_metadata(path)
    assert meta.format is MetadataFormat.NONE and meta.source is MetadataSource.NONE
    assert any(problem in p for p in meta.problems), meta.problems


def test_gzip_bomb_in_stealth_payload(tmp_path: Path) -> None:
    _no_metadata_with_problem(hostile_files.gzip_bomb_stealth_png(tmp_path), "gzip bomb")


def test_stealth_length_points_past_the_image(tmp_path: Path) -> None:
    w = h = 32
    stream = b"stealth_pngcomp" + (10**9).to_bytes(4, "big")
    bits = np.unpackbits(np.frombuffer(stream, np.uint8))
    alpha = np.full(w * h, 255, np.uint8)
    alpha[: bits.size] = 0xFE | bits
    pixels = nai_writer.noise_pixels((w, h))
    pixels[..., 3] = alpha.reshape(w, h).T
    path = tmp_path / "long.png"
    Image.fromarray(pixels, "RGBA").save(path)
    _no_metadata_with_problem(path, "does not fit")


def test_truncated_gzip_payload(tmp_path: Path) -> None:
    _no_metadata_with_problem(
        hostile_files.stealth_png(tmp_path, gzip.compress(b'{"a": 1}' * 50)[:-20]), "truncated"
    )


def test_invalid_utf8_in_stealth_payload(tmp_path: Path) -> None:
    _no_metadata_with_problem(
        hostile_files.stealth_png(tmp_path, gzip.compress(b"\xff\xfe\xfd not utf-8")), "UTF-8"
    )


def test_stealth_json_that_is_not_an_object(tmp_path: Path) -> None:
    _no_metadata_with_problem(
        hostile_files.stealth_png(tmp_path, gzip.compress(b'["Comment", 1]')), "not an object"
    )


def test_text_comment_that_is_not_an_object_falls_back_to_stealth(tmp_path: Path) -> None:
    good = nai_writer.write_nai_png(tmp_path / "good.png", stealth=True, text=False, seed=77)
    image = Image.open(good)
    info = nai_writer.PngImagePlugin.PngInfo()
    info.add_text("Software", "NovelAI")
    info.add_text("Comment", "[1, 2, 3]")
    bad = tmp_path / "bad.png"
    image.save(bad, pnginfo=info)
    meta = read_metadata(bad)
    assert meta.is_novelai and meta.source is MetadataSource.STEALTH and meta.seed == 77
    assert any("text Comment is not a JSON object" in p for p in meta.problems)


def test_one_by_one_images(tmp_path: Path) -> None:
    for mode in ("RGBA", "RGB", "L", "P", "LA"):
        path = tmp_path / f"tiny_{mode}.png"
        Image.new(mode, (1, 1)).save(path)
        image, meta = read_image(path)
        assert image.size == (1, 1) and meta.format is MetadataFormat.NONE and meta.problems == ()


def test_palette_image_without_metadata(tmp_path: Path) -> None:
    path = tmp_path / "palette.png"
    Image.fromarray(nai_writer.noise_pixels((64, 64))[..., :3], "RGB").quantize(16).save(path, transparency=0)
    assert read_metadata(path).format is MetadataFormat.NONE


def test_la_image_carries_stealth(tmp_path: Path) -> None:
    fields = nai_writer.nai_fields(nai_writer.nai_comment(seed=99))
    alpha = nai_writer.stealth_alpha(64, 64, nai_writer.stealth_payload(fields))
    grey = nai_writer.noise_pixels((64, 64))[..., 0]
    path = tmp_path / "la.png"
    Image.fromarray(np.dstack([grey, alpha]), "LA").save(path)
    meta = read_metadata(path)
    assert meta.is_novelai and meta.source is MetadataSource.STEALTH and meta.seed == 99


def test_ztxt_bomb_in_text_chunk(tmp_path: Path) -> None:
    # A compressed text chunk inflating past PIL's text limit: a clear error, fast.
    data = b"Comment\x00\x00" + zlib.compress(b"a" * (64 << 20), 9)
    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    path = tmp_path / "ztxt.png"
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + hostile_files.png_chunk(b"IHDR", ihdr)
        + hostile_files.png_chunk(b"zTXt", data)
        + hostile_files.png_chunk(b"IDAT", zlib.compress(b"\x00\x00"))
        + hostile_files.png_chunk(b"IEND", b"")
    )
    _expect_input_error(path, "gzip bomb")


@pytest.mark.filterwarnings("ignore::UserWarning")  # PIL warns about the corrupt EXIF it skips
def test_corrupted_files_only_ever_raise_input_error(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\x00" + "a duck\nSteps: 20, Seed: 1".encode("utf-16-be")
    jpeg = tmp_path / "a1111.jpg"
    Image.new("RGB", (8, 8), "white").save(jpeg, exif=exif)
    assert (read_metadata(jpeg).format, read_metadata(jpeg).prompt) == (MetadataFormat.A1111, "a duck")
    sources = [
        nai_writer.write_nai_png(tmp_path / "nai.png", stealth=True),
        nai_writer.write_nai_webp(tmp_path / "nai.webp"),
        jpeg,
    ]
    for n, src in enumerate(sources):
        target = tmp_path / f"mutant{src.suffix}"
        for data in hostile_files.mutants(src.read_bytes(), seed=n, count=60):
            target.write_bytes(data)
            try:
                read_image(target)
            except InputError as exc:
                assert str(target) in str(exc)


def test_deeply_nested_json_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    # json.loads raises RecursionError (not ValueError) on deep nesting: a few KiB of "[" in a
    # Comment chunk, a stealth payload or an EXIF UserComment must not crash the reader.
    nested = "[" * 100_000
    png = tmp_path / "nested.png"
    info = nai_writer.PngImagePlugin.PngInfo()
    info.add_text("Software", "NovelAI")
    info.add_text("Comment", nested)
    Image.new("RGB", (8, 8)).save(png, pnginfo=info)
    assert any("not a JSON object" in p for p in read_metadata(png).problems)
    _no_metadata_with_problem(
        hostile_files.stealth_png(tmp_path, gzip.compress(nested.encode()), (256, 256)), "JSON"
    )
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = b"ASCII\x00\x00\x00" + nested[:20_000].encode()  # EXIF < 64 KiB
    jpeg = tmp_path / "nested.jpg"
    Image.new("RGB", (8, 8), "white").save(jpeg, exif=exif)
    assert read_metadata(jpeg).format is MetadataFormat.A1111


def test_bytes_already_read_are_decoded_not_the_file_again(tmp_path: Path) -> None:
    # run_job hashes the bytes it read; the pixels and metadata must be of those bytes, even when
    # the file on disk has been replaced since.
    old = nai_writer.write_nai_png(tmp_path / "old.png", seed=11, stealth=True)
    data = old.read_bytes()
    nai_writer.write_nai_png(old, seed=22, stealth=True, pixel_seed=5)
    image, meta = read_image(old, data=data)
    assert meta.seed == 11 and meta.is_novelai and meta.source is MetadataSource.TEXT
    assert image.tobytes() == Image.open(io.BytesIO(data)).tobytes()
    with pytest.raises(InputError, match=r"old\.png: empty file"):
        read_image(old, data=b"")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX-only")
def test_fifo_is_not_a_regular_file_and_is_never_opened(tmp_path: Path) -> None:
    # Opening a FIFO for reading blocks until a writer comes: the reader must refuse it from stat alone.
    path = tmp_path / "pipe.png"
    os.mkfifo(path)
    _expect_input_error(path, "not a regular file")
