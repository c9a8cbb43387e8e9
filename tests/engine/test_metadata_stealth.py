"""Stealth alpha payloads, copy merging, classification traps, signatures, read_image's image."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import nai_writer
import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from naiup.metadata.read import MetadataFormat, MetadataSource, Signature, read_image, read_metadata

A1111_INFOTEXT = (
    "a red fox\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 42, Size: 64x64"
)
OPAQUE = np.full((8, 8), 255, np.uint8)


def _png_with_alpha(path: Path, alpha: np.ndarray, texts: dict[str, str] | None = None) -> Path:
    h, w = alpha.shape
    pixels = nai_writer.noise_pixels((w, h))
    pixels[..., 3] = alpha
    info = PngImagePlugin.PngInfo()
    for key, value in (texts or {}).items():
        info.add_text(key, value)
    Image.fromarray(pixels, "RGBA").save(path, pnginfo=info)
    return path


def test_stealth_only_file_is_novelai_from_stealth(tmp_path: Path) -> None:
    meta = read_metadata(nai_writer.write_nai_png(tmp_path / "s.png", text=False, stealth=True, seed=5))
    assert (meta.format, meta.source, meta.seed) == (MetadataFormat.NOVELAI, MetadataSource.STEALTH, 5)
    assert meta.model == nai_writer.SOURCE and meta.generation_time == 3.5 and meta.text_chunks == {}


def test_text_copy_preferred_and_agreement_reported(tmp_path: Path) -> None:
    meta = read_metadata(nai_writer.write_nai_png(tmp_path / "b.png", stealth=True))
    assert meta.source is MetadataSource.TEXT and not meta.copies_disagree


def test_disagreeing_copies_are_flagged(tmp_path: Path) -> None:
    stealth_fields = nai_writer.nai_fields(nai_writer.nai_comment(seed=2))
    alpha = nai_writer.stealth_alpha(64, 64, nai_writer.stealth_payload(stealth_fields))
    text_fields = nai_writer.nai_fields(nai_writer.nai_comment(seed=1))
    meta = read_metadata(_png_with_alpha(tmp_path / "d.png", alpha, text_fields))
    assert meta.is_novelai and meta.copies_disagree and meta.seed == 1 and meta.source is MetadataSource.TEXT


@pytest.mark.parametrize("signature", [b"stealth_pngcomp", b"stealth_pnginfo"])
def test_a1111_stealth_is_never_novelai(tmp_path: Path, signature: bytes) -> None:
    body = A1111_INFOTEXT.encode()
    payload = gzip.compress(body) if signature.endswith(b"comp") else body
    alpha = nai_writer.stealth_alpha(64, 64, payload, signature)
    meta = read_metadata(_png_with_alpha(tmp_path / "a.png", alpha))
    assert (meta.format, meta.source) == (MetadataFormat.A1111, MetadataSource.STEALTH)
    assert (meta.prompt, meta.negative_prompt, meta.seed, meta.steps, meta.scale) == (
        "a red fox",
        "blurry",
        42,
        20,
        7.0,
    )


def test_comment_alone_is_never_novelai(tmp_path: Path) -> None:
    comment = json.dumps(nai_writer.nai_comment())
    meta = read_metadata(_png_with_alpha(tmp_path / "c.png", OPAQUE, {"Comment": comment}))
    assert meta.format is MetadataFormat.OTHER and "nothing else says NovelAI" in meta.problems[0]
    gimp = _png_with_alpha(tmp_path / "g.png", OPAQUE, {"Comment": "Created with GIMP"})
    assert read_metadata(gimp).format is MetadataFormat.NONE


def test_parameters_chunk_is_a1111(tmp_path: Path) -> None:
    path = _png_with_alpha(tmp_path / "p.png", OPAQUE, {"parameters": A1111_INFOTEXT})
    meta = read_metadata(path)
    assert (meta.format, meta.prompt, meta.sampler) == (MetadataFormat.A1111, "a red fox", "Euler a")
    assert (meta.width, meta.height) == (64, 64)  # the infotext's Size, not the 8x8 pixels


def test_webp_exif_and_stealth(tmp_path: Path) -> None:
    path = nai_writer.write_nai_webp(tmp_path / "n.webp", prompt="cat, {dog}", seed=31)
    image, meta = read_image(path)
    assert (meta.format, meta.source, meta.seed, meta.prompt) == (
        MetadataFormat.NOVELAI,
        MetadataSource.EXIF,
        31,
        "cat, {dog}",
    )
    assert meta.model == nai_writer.SOURCE and not meta.copies_disagree and image.mode == "RGBA"


def _resave(src: Path, dst: Path, pixels: np.ndarray, mode: str) -> Path:
    with Image.open(src) as image:
        image.load()
        info = PngImagePlugin.PngInfo()
        for key, value in image.text.items():
            info.add_text(key, value)
    Image.fromarray(pixels, mode).save(dst, pnginfo=info)
    return dst


def test_signature_follows_the_rgb_pixels(nai_fixtures: Path, tmp_path: Path) -> None:
    src = nai_fixtures / "nai3_128_text_stealth_smea_vibe.png"
    pixels = np.array(Image.open(src))
    rgb_copy = _resave(src, tmp_path / "rgb.png", np.ascontiguousarray(pixels[..., :3]), "RGB")
    assert read_metadata(rgb_copy).signature is Signature.VALID  # alpha is not signed
    tampered = pixels.copy()
    tampered[0, 0, 0] ^= 1
    bad = read_metadata(_resave(src, tmp_path / "t.png", tampered, "RGBA"))
    assert bad.is_novelai and bad.signature is Signature.INVALID


def test_stripped_fixture_still_reads_from_stealth(nai_fixtures: Path, tmp_path: Path) -> None:
    src = nai_fixtures / "nai3_128_text_stealth_smea_vibe.png"
    stripped = tmp_path / "stripped.png"
    Image.fromarray(np.array(Image.open(src)), "RGBA").save(stripped)
    meta = read_metadata(stripped)
    assert (meta.source, meta.signature, meta.seed) == (MetadataSource.STEALTH, Signature.VALID, 1148692016)


def test_read_image_is_decoded_and_exif_transposed(tmp_path: Path) -> None:
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise for display
    Image.new("RGB", (40, 20), "red").save(path, exif=exif)
    image, meta = read_image(path)
    assert image.size == (20, 40) and meta.format is MetadataFormat.NONE
    assert np.asarray(image).shape == (40, 20, 3)


def test_signature_check_can_be_skipped(nai_fixtures: Path) -> None:
    path = nai_fixtures / "nai3_128_text_stealth_smea_vibe.png"
    assert read_metadata(path, check_signature=False).signature is Signature.UNCHECKED
    legacy = nai_fixtures / "nai1_legacy_text_cropped_1x1.png"  # no signed_hash: absent either way
    assert read_metadata(legacy, check_signature=False).signature is Signature.ABSENT


_XMP_NOVELAI = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:CreatorTool="NovelAI"/>'
    b"</rdf:RDF></x:xmpmeta>"
)


@pytest.mark.parametrize("xmp", [True, False])
def test_converted_jpeg_needs_more_than_the_comment(tmp_path: Path, xmp: bool) -> None:
    exif = Image.Exif()
    comment = json.dumps(nai_writer.nai_comment("cat", seed=11))
    exif.get_ifd(0x8769)[0x9286] = b"ASCII\x00\x00\x00" + comment.encode()
    path = tmp_path / "converted.jpg"
    extra = {"xmp": _XMP_NOVELAI} if xmp else {}
    Image.new("RGB", (32, 32), "blue").save(path, exif=exif, **extra)
    meta = read_metadata(path)
    if xmp:  # XMP CreatorTool says NovelAI: the bare Comment JSON in UserComment is its parameters
        assert (meta.format, meta.source, meta.seed, meta.prompt) == (
            MetadataFormat.NOVELAI,
            MetadataSource.EXIF,
            11,
            "cat",
        )
    else:
        assert meta.format is MetadataFormat.OTHER


def test_odd_comment_values_do_not_crash(tmp_path: Path) -> None:
    comment = nai_writer.nai_comment()
    comment.update(seed="12", steps=1.9e400, scale="high", width=-5, height="nan", sampler=3)
    alpha = np.full((48, 64), 255, np.uint8)
    meta = read_metadata(_png_with_alpha(tmp_path / "odd.png", alpha, nai_writer.nai_fields(comment)))
    assert meta.is_novelai and (meta.seed, meta.steps, meta.scale, meta.sampler) == (12, None, None, None)
    assert (meta.width, meta.height) == (64, 48)  # nonsense sizes fall back to the pixels
