"""Gallery thumbnails: JPEGs of at most 256 px, cached beside the gallery page.

A thumbnail's name carries its source's path hash, mtime and size, so it is made once per version of
the file: an unchanged output costs one stat(), a changed one gets a fresh thumbnail and the old one
is removed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

THUMB_MAX = 256
_QUALITY = 85


def thumbnail_path(image: Path, folder: Path) -> Path | None:
    """Where the thumbnail of this version of `image` lives; None when the image is gone."""
    try:
        st = image.stat()
    except OSError:
        return None
    key = hashlib.sha256(str(image).encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return folder / f"{key}-{st.st_mtime_ns:x}-{st.st_size:x}.jpg"


def thumbnail(image: Path, folder: Path) -> Path | None:
    """The cached thumbnail, made when missing or stale; None when the image cannot be read."""
    target = thumbnail_path(image, folder)
    if target is None:
        return None
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{id(target):x}.tmp")
    try:
        with Image.open(image) as im:
            im.draft("RGB", (THUMB_MAX * 2, THUMB_MAX * 2))  # JPEG: decode at a reduced scale
            im.thumbnail((THUMB_MAX, THUMB_MAX), Image.Resampling.LANCZOS, reducing_gap=2.0)
            small = im.convert("RGB")  # NovelAI's alpha only holds stealth bits: no transparency
        small.save(tmp, "JPEG", quality=_QUALITY, optimize=True)
        os.replace(tmp, target)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
    finally:
        tmp.unlink(missing_ok=True)
    prefix = target.name.split("-", 1)[0] + "-"
    for old in folder.glob(prefix + "*.jpg"):  # earlier versions of the same file
        if old != target:
            old.unlink(missing_ok=True)
    return target


def thumbnails(images: Iterable[Path], folder: Path) -> dict[Path, Path | None]:
    """Many at once: decoding big PNGs releases the GIL, so threads use every core."""
    unique = list(dict.fromkeys(images))
    workers = max(1, min(8, os.cpu_count() or 1, len(unique)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="naiup-thumb") as pool:
        return dict(zip(unique, pool.map(lambda p: thumbnail(p, folder), unique), strict=True))
