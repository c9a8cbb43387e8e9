"""Every shared fixture is classified right, with its key fields (SOURCES.md says what each carries)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from naiup.metadata.read import MetadataFormat, MetadataSource, Signature, read_metadata

NAI, TEXT, EXIF, STEALTH = (
    MetadataFormat.NOVELAI,
    MetadataSource.TEXT,
    MetadataSource.EXIF,
    MetadataSource.STEALTH,
)
VALID, INVALID, ABSENT = Signature.VALID, Signature.INVALID, Signature.ABSENT

# file: (format, source, signature, expected fields)
NAI_FILES: dict[str, tuple[MetadataFormat, MetadataSource, Signature, dict[str, Any]]] = {
    "nai45_curated_1024_text_stealth.png": (
        NAI,
        TEXT,
        VALID,
        {
            "model": "NovelAI Diffusion V4.5 C02D4F98",
            "seed": 2156638429,
            "steps": 23,
            "size": (1024, 1024),
            "prompt_has": "-0.8::feet::",
            "prompt_starts": "1girl, solo, hatsune miku, #テスト",
        },
    ),
    "nai45_full_832x1216_itxt_stealth.png": (
        NAI,
        TEXT,
        VALID,
        {
            "model": "NovelAI Diffusion V4.5 4BDE2A90",
            "seed": 2043807047,
            "size": (832, 1216),
            "prompt_has": "テスト",
        },
    ),
    "nai45_full_3chars_1024.png": (
        NAI,
        TEXT,
        VALID,
        {"seed": 1702945580, "steps": 28, "chars": 3, "noise_schedule": "karras"},
    ),
    "nai45_full_director_reference_1024.png": (
        NAI,
        TEXT,
        VALID,
        {"seed": 949223552, "raw_key": "director_reference_strengths"},
    ),
    "nai45_curated_lossless_exif.webp": (
        NAI,
        EXIF,
        VALID,
        {
            "model": "NovelAI Diffusion V4.5 C02D4F98",
            "seed": 880673757,
            "prompt_starts": "1girl, solo, hatsune miku, #テスト",
        },
    ),
    "nai45_full_generation_time_underscore.png": (
        NAI,
        TEXT,
        VALID,
        {"seed": 3094438483, "size": (832, 1216), "generation_time": 4.201738026924431},
    ),
    "nai3_1024_text_stealth.png": (
        NAI,
        TEXT,
        VALID,
        {"model": "Stable Diffusion XL C1E1DE52", "seed": 118010015, "raw_key": "extra_noise_seed"},
    ),
    "nai3_1024_ztxt_after_idat_stealth.png": (NAI, TEXT, VALID, {"seed": 118010015, "prompt": "1girl"}),
    "nai3_resized_256_ztxt_no_stealth.png": (
        NAI,
        TEXT,
        INVALID,
        {"seed": 118010015, "size": (1024, 1024), "problem": "resized"},
    ),
    "nai3_resized_16_palette_ztxt.png": (NAI, TEXT, INVALID, {"seed": 118010015, "problem": "16x16"}),
    "nai3_converted_exif_usercomment.jpg": (
        NAI,
        EXIF,
        INVALID,
        {"seed": 921464164, "model": None, "prompt_starts": "1girl, {artist:ixy}"},
    ),
    "nai3_640_stealth_only.png": (
        NAI,
        STEALTH,
        VALID,
        {"seed": 307216390, "size": (640, 640), "prompt_has": "{aris_{{blue_archive}}}"},
    ),
    "nai3_640_text_stealth.png": (NAI, TEXT, VALID, {"seed": 177879407, "raw_key": "sm_dyn"}),
    "nai3_128_text_stealth_smea_vibe.png": (
        NAI,
        TEXT,
        VALID,
        {"seed": 1148692016, "sampler": "k_euler", "raw_key": "cfg_rescale"},
    ),
    "nai3_128_thirdparty_rewritten.png": (NAI, TEXT, INVALID, {"seed": 1148692016}),
    "nai1_furry_img2img_128_text_stealth.png": (
        NAI,
        TEXT,
        ABSENT,
        {"model": "Stable Diffusion F64BA557", "seed": 4091185279, "generation_time": None},
    ),
    "nai_director_augment_sketch_rgb.png": (
        NAI,
        TEXT,
        ABSENT,
        {"seed": None, "steps": None, "prompt": "", "generation_time": 5.9089, "raw_key": "req_type"},
    ),
    "nai1_legacy_text_cropped_1x1.png": (
        NAI,
        TEXT,
        ABSENT,
        {"model": "Stable Diffusion 1D44365E", "steps": 50, "prompt_has": "cat, space", "size": (1, 1)},
    ),
    "nai1_legacy_text_palette.png": (
        NAI,
        TEXT,
        ABSENT,
        {"model": "Stable Diffusion ADDB53AF", "prompt_has": "{{{"},
    ),
}

OTHER_FILES: dict[str, tuple[MetadataFormat, MetadataSource, str | None]] = {
    "a1111_text_parameters_1x1.png": (MetadataFormat.A1111, TEXT, "photo of a duck"),
    "a1111_stealth_pngcomp_64.png": (MetadataFormat.A1111, STEALTH, "a circle"),
    "a1111_exif_usercomment_1x1.jpg": (MetadataFormat.A1111, EXIF, "photo of a duck"),
    "a1111_ztxt_after_idat_1x1.png": (MetadataFormat.A1111, TEXT, "photo of a duck"),
    "a1111_itxt_parameters_1024.png": (MetadataFormat.A1111, TEXT, None),
    "a1111_exif_unicode_1024.webp": (MetadataFormat.A1111, EXIF, None),
    "comfyui_prompt_workflow_1x1.png": (MetadataFormat.COMFYUI, TEXT, None),
    "comfyui_prompt_workflow_1024.png": (MetadataFormat.COMFYUI, TEXT, None),
    "fooocus_parameters_json_1x1.png": (MetadataFormat.OTHER, TEXT, None),
    "invokeai_metadata_1x1.png": (MetadataFormat.OTHER, TEXT, None),
    "gimp_itxt_comment_not_nai_1024.png": (MetadataFormat.NONE, MetadataSource.NONE, None),
    "plain_no_genmeta_1x1.png": (MetadataFormat.NONE, MetadataSource.NONE, None),
    "plain_no_metadata_832x1216.png": (MetadataFormat.NONE, MetadataSource.NONE, None),
}


@pytest.mark.parametrize("name", sorted(NAI_FILES))
def test_novelai_fixture(nai_fixtures: Path, name: str) -> None:
    fmt, source, signature, want = NAI_FILES[name]
    meta = read_metadata(nai_fixtures / name)
    assert (meta.format, meta.source, meta.signature) == (fmt, source, signature)
    assert meta.is_novelai and not meta.copies_disagree
    for key in ("seed", "steps", "model", "sampler", "noise_schedule", "generation_time", "prompt"):
        if key in want:
            assert getattr(meta, key) == want[key], key
    if "size" in want:
        assert (meta.width, meta.height) == want["size"]
    if "prompt_has" in want:
        assert want["prompt_has"] in meta.prompt
    if "prompt_starts" in want:
        assert meta.prompt.startswith(want["prompt_starts"])
    if "raw_key" in want:
        assert want["raw_key"] in meta.raw
    if "problem" in want:
        assert any(want["problem"] in p for p in meta.problems)
    assert len(meta.characters) == want.get("chars", 0)


def test_v45_character_captions_and_centres(nai_fixtures: Path) -> None:
    meta = read_metadata(nai_fixtures / "nai45_full_3chars_1024.png")
    assert [c.center for c in meta.characters] == [(0.5, 0.3), (0.7, 0.7), (0.3, 0.7)]
    assert "hatsune miku" in meta.characters[0].prompt and "kagamine len" in meta.characters[2].prompt
    assert all(c.negative_prompt == "" for c in meta.characters)
    assert meta.prompt == meta.raw["v4_prompt"]["caption"]["base_caption"]
    assert meta.negative_prompt == meta.raw["v4_negative_prompt"]["caption"]["base_caption"]


def test_png_text_chunks_kept_for_outputs(nai_fixtures: Path) -> None:
    meta = read_metadata(nai_fixtures / "nai45_full_generation_time_underscore.png")
    assert list(meta.text_chunks) == [
        "Comment",
        "Title",
        "Description",
        "Software",
        "Source",
        "Generation_time",
    ]
    after_idat = read_metadata(nai_fixtures / "nai3_1024_ztxt_after_idat_stealth.png")
    assert after_idat.text_chunks["Software"] == "NovelAI" and "Comment" in after_idat.text_chunks


@pytest.mark.parametrize("name", sorted(OTHER_FILES))
def test_negative_fixture(other_fixtures: Path, name: str) -> None:
    fmt, source, prompt = OTHER_FILES[name]
    meta = read_metadata(other_fixtures / name)
    assert (meta.format, meta.source) == (fmt, source)
    assert not meta.is_novelai and meta.signature is Signature.ABSENT
    if prompt is not None:
        assert meta.prompt == prompt
