"""The before/after page for one result: a self-contained HTML file in the per-user cache.

    write_compare_page(pair, folder, gallery=None) -> Path
    compare_data(pair) -> dict       # what the page shows, as JSON-ready data (tested without a browser)

The page (static/compare.html) holds its CSS and JS inline and references the two images by `file://`
URL: a 16 MP output is not copied or embedded. The original is shown at the output's size, scaled by the
browser with its ordinary smooth filter (bilinear/bicubic: what any viewer does when enlarging), or
nearest neighbour on `N`; no resized copy is written, so opening a compare costs no time and no disk.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import time
from importlib import resources
from pathlib import Path
from typing import Any

from PIL import Image

from naiup.errors import NaiupError
from naiup.metadata.types import ImageMetadata, MetadataFormat, MetadataSource
from naiup.output.provenance import PARAMETERS_KEY, PROVENANCE_KEY
from naiup.pathnames import plain_text, shown
from naiup.review.links import Pair
from naiup.review.urls import file_url

_FALLBACK_SIZE = (1024, 1024)  # neither file exists: the placeholders still need a shape


def write_compare_page(pair: Pair, folder: Path, gallery: Path | None = None) -> Path:
    """Write (or rewrite) the page for `pair` into `folder` and return its path."""
    data = compare_data(pair)
    if gallery is not None:
        data["gallery_url"] = file_url(gallery)
    page = folder / page_name(pair)
    title = f"naiup: {shown((pair.output or pair.source or Path('?')).name)}"
    write_text(page, render("compare.html", title, data))
    return page


def page_name(pair: Pair) -> str:
    """Stable per result, so opening it again rewrites one file instead of adding another."""
    key = pair.output or pair.source or Path("unknown")
    digest = hashlib.sha256(str(key).encode("utf-8", "surrogateescape")).hexdigest()[:12]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", key.stem)[:48].strip("._") or "image"
    return f"{slug}-{digest}.html"


def render(template: str, title: str, data: dict[str, Any], **blocks: str) -> str:
    """The template with its title, `data` as JSON (safe inside <script>) and pre-escaped HTML blocks."""
    text = resources.files("naiup.review").joinpath("static", template).read_text("utf-8")
    payload = (
        json.dumps(data, ensure_ascii=False)
        .replace("<", "\\u003c")  # no "</script>" can end the block early
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
    )
    values = {"TITLE": html.escape(title), "DATA": payload, **{k.upper(): v for k, v in blocks.items()}}
    # One pass: a file name that reads "@CARDS@" stays text, never becomes a second insertion point.
    return re.sub(r"@([A-Z]+)@", lambda m: values.get(m.group(1), m.group(0)), text)


def write_text(path: Path, text: str) -> None:
    """Cache files: whole or not at all (temp + rename), no fsync: they can always be made again."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# -- what the page shows -------------------------------------------------------------------------


def compare_data(pair: Pair) -> dict[str, Any]:
    out = _image_info(pair.output, "result")
    src = _image_info(pair.source, "original")
    prov = pair.provenance or {}
    preset = prov.get("preset") if isinstance(prov.get("preset"), dict) else {}
    params = prov.get("parameters") if isinstance(prov.get("parameters"), dict) else {}
    if out.get("width"):
        size = (out["width"], out["height"])
    elif src.get("width"):
        scale = _number(preset.get("scale")) or _number(params.get("scale")) or 1.0
        size = (round(src["width"] * scale), round(src["height"] * scale))
    else:
        size = _FALLBACK_SIZE
    preset_name = preset.get("name") or (pair.item.preset if pair.item else None)
    meta = _generation_metadata(pair)
    sections = [
        _section("Result", _file_rows(out)),
        _section("Original", _file_rows(src) + _original_notes(pair, src, size)),
        _section("How it was made", _made_rows(pair, prov, preset, params)),
        _section("Timing", _timing_rows(pair)),
        _section("NovelAI generation", _nai_rows(meta)),
    ]
    texts = _prompt_texts(meta, params)
    return {
        "width": size[0],
        "height": size[1],
        "original": src,
        "result": out,
        "result_label": preset_name or "result",
        "sections": [s for s in sections if s["rows"]],
        "texts": texts,
        "gallery_url": None,
    }


def _image_info(path: Path | None, what: str) -> dict[str, Any]:
    if path is None:
        return {"exists": False, "path": None, "url": None, "name": None, "missing": f"no {what} is known"}
    # Shown names are escaped (a name that is not UTF-8 has \xNN); the URL keeps the file's real bytes.
    info: dict[str, Any] = {
        "path": shown(path),
        "url": file_url(path),
        "name": shown(path.name),
        "exists": False,
    }
    try:
        st = path.stat()
    except OSError:
        info["missing"] = f"{what} not found: {shown(path)}"
        return info
    info.update(bytes=st.st_size, modified=st.st_mtime)
    try:
        with Image.open(path) as im:
            info.update(width=im.width, height=im.height, format=im.format)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        info["missing"] = f"{what} cannot be read: {shown(path)} ({plain_text(str(exc))})"
        return info
    info["exists"] = True
    return info


def _section(title: str, rows: list[tuple[str, Any]]) -> dict[str, Any]:
    return {"title": title, "rows": [[k, str(v)] for k, v in rows if v not in (None, "")]}


def _file_rows(info: dict[str, Any]) -> list[tuple[str, Any]]:
    if info.get("path") is None:
        return [("file", info.get("missing"))]
    rows: list[tuple[str, Any]] = [("file", info["name"]), ("folder", _folder(Path(info["path"]).parent))]
    if not info["exists"]:
        return [*rows, ("missing", info.get("missing"))]
    w, h = info["width"], info["height"]
    rows += [
        ("size", f"{w} × {h} ({w * h / 1e6:.1f} MP)"),
        ("bytes", _bytes(info["bytes"])),
        ("modified", _when(info["modified"])),
    ]
    return rows


def _folder(folder: Path) -> str:
    """`~/Downloads` rather than the full home path: shorter, and what people call it."""
    try:
        home = Path.home()
        return "~" if folder == home else f"~/{folder.relative_to(home).as_posix()}"
    except (ValueError, RuntimeError):  # not under home, or no home at all
        return str(folder)


def _original_notes(pair: Pair, src: dict[str, Any], size: tuple[int, int]) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    if src.get("exists") and (src["width"], src["height"]) != size:
        rows.append(("shown at", f"{size[0]} × {size[1]}, the result's size (smooth filter; N: nearest)"))
    if pair.source_changed:
        rows.append(("note", "the original changed after this result was made (SHA-256 differs)"))
    return rows


def _made_rows(pair: Pair, prov: dict, preset: dict, params: dict) -> list[tuple[str, Any]]:
    refine = bool(params.get("refine", preset.get("refine")))
    upscaler = params.get("upscaler") or preset.get("upscaler")
    upscaler_id = params.get("upscaler_id")
    rows: list[tuple[str, Any]] = [
        ("preset", preset.get("name") or (pair.item.preset if pair.item else None)),
        ("scale", f"× {_fmt(params.get('scale') or preset.get('scale'))}" if preset or params else None),
        ("upscaler", f"{upscaler} ({upscaler_id})" if upscaler_id and upscaler_id != upscaler else upscaler),
        ("refine", ("yes" if refine else "no (upscale only)") if preset or params else None),
    ]
    if refine:
        steps, denoise = _number(params.get("steps")), _number(params.get("denoise"))
        unet = f" ({max(1, int(steps * denoise))} UNet steps)" if steps and denoise else ""
        rows += [
            # Before model families were recorded, naiup refined with SD 1.5 only.
            ("family", params.get("family") or preset.get("family") or "SD 1.5"),
            ("model set", params.get("refiner_id")),
            ("denoise", _fmt(params.get("denoise"))),
            ("steps", f"{_fmt(params.get('steps'))}{unet}" if params.get("steps") is not None else None),
            ("cfg", _fmt(params.get("cfg"))),
            ("sampler", params.get("sampler")),
            ("seed", prov.get("seed") if prov.get("seed") is not None else params.get("seed")),
        ]
    rows += [
        ("model id", prov.get("model_id") or (pair.item.model if pair.item else None)),
        ("naiup", prov.get("version")),
    ]
    if pair.provenance is None and pair.output is not None and pair.output.is_file():
        rows.append(("note", "the result carries no naiup provenance (edited or re-saved by another tool?)"))
    return rows


def _timing_rows(pair: Pair) -> list[tuple[str, Any]]:
    item = pair.item
    if item is None:
        return []
    rows: list[tuple[str, Any]] = [("finished", _when(item.finished) if item.finished else None)]
    if item.started and item.finished and item.finished >= item.started:
        # No "(model loading included)": the worker loads its model before the first job, and nothing
        # records whether a given job had to load one, so the page makes no claim either way.
        rows.append(("took", f"{item.finished - item.started:.1f} s"))
    if item.queued_at and item.started and item.started >= item.queued_at:
        rows.append(("waited", f"{item.started - item.queued_at:.1f} s in the queue"))
    if item.attempts > 1:
        rows.append(("attempts", item.attempts))
    return rows


def _nai_rows(meta: ImageMetadata | None) -> list[tuple[str, Any]]:
    if meta is None or meta.format is MetadataFormat.NONE:
        return []
    size = f"{meta.width} × {meta.height}" if meta.width and meta.height else None
    return [
        ("made by", meta.model or str(meta.format)),
        ("size", size),
        ("seed", meta.seed),
        ("steps", meta.steps),
        ("scale", _fmt(meta.scale) if meta.scale is not None else None),
        ("sampler", meta.sampler),
    ]


def _prompt_texts(meta: ImageMetadata | None, params: dict) -> list[list[str]]:
    texts: list[list[str]] = []
    if meta is not None and meta.format is not MetadataFormat.NONE:
        label = "NovelAI prompt" if meta.is_novelai else f"{meta.format} prompt"
        if meta.prompt:
            texts.append([label, meta.prompt])
        if meta.negative_prompt:
            texts.append(["Negative prompt (undesired content)", meta.negative_prompt])
        for i, c in enumerate(meta.characters, 1):
            where = f" at {c.center[0]:g},{c.center[1]:g}" if c.center else ""
            texts.append([f"Character {i}{where}", c.prompt])
            if c.negative_prompt:
                texts.append([f"Character {i} negative", c.negative_prompt])
    if params.get("prompt"):
        texts.append(["Refine prompt (as naiup sent it)", str(params["prompt"])])
    if params.get("negative_prompt"):
        texts.append(["Refine negative prompt", str(params["negative_prompt"])])
    return texts


def _generation_metadata(pair: Pair) -> ImageMetadata | None:
    """The NovelAI data: from the result's carried text chunks (no pixels decoded), else the original."""
    from naiup.metadata.detect import detect
    from naiup.metadata.read import read_metadata

    if pair.output is not None and pair.output.is_file():
        try:
            with Image.open(pair.output) as im:
                ours = (PROVENANCE_KEY, PARAMETERS_KEY)  # our own chunks are not the generator's
                fields = {k: v for k, v in im.info.items() if isinstance(v, str) and k not in ours}
                meta = detect(im, fields, MetadataSource.TEXT, None, fields, check_signature=False)
            if meta.format is not MetadataFormat.NONE:
                return meta
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            pass
    if pair.source is not None and pair.source.is_file():
        try:
            return read_metadata(pair.source, check_signature=False)
        except NaiupError:
            return None
    return None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _fmt(value: Any) -> str | None:
    if value is None:
        return None
    return f"{value:g}" if isinstance(value, float) else str(value)


def _bytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))
