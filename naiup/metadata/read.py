"""Read an image and its generation metadata (NovelAI first; A1111/ComfyUI/others recognised).

CONTRACT (other modules code against these names):
    read_metadata(path: Path, *, check_signature=True) -> ImageMetadata   # InputError if unreadable
    read_image(path: Path, *, check_signature=True, data=None) -> tuple[PIL.Image.Image, ImageMetadata]
        fully decoded (load() done, LOAD_TRUNCATED_IMAGES off, pixel-bomb guarded), EXIF-transposed,
        in its stored mode (NAI PNGs are RGBA whose alpha only carries stealth bits: drop it for img2img)
    ImageMetadata.format: MetadataFormat (novelai | a1111 | comfyui | other | none)
    ImageMetadata.text_chunks: dict[str, str]   # original PNG text chunks, to carry into outputs
    ImageMetadata.problems: tuple[str, ...]     # malformed copies that were skipped, not fatal
    ImageMetadata.is_novelai -> bool
    ensure_rgb(image, source) -> RGB image    # alpha/palette dropped; InputError naming `source`

Where things live: types.py (result types), detect.py (classification), stealth.py (alpha LSB
payload), exif.py (EXIF/XMP), signature.py (ed25519 check); the format: docs/design/nai-metadata.md.
A malformed metadata copy never makes the image unreadable: it is recorded in `problems` and the
other copies are used. Only an image that cannot be decoded raises (InputError, naming the reason).
"""

from __future__ import annotations

import io
import os
import stat
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from naiup.errors import InputError, NotAnImageError, UnsafeInputError
from naiup.metadata.detect import detect
from naiup.metadata.exif import read_exif_texts
from naiup.metadata.stealth import HEADER_BITS, StealthPayload, decode_stealth
from naiup.metadata.types import (
    CharacterPrompt,
    ImageMetadata,
    MetadataFormat,
    MetadataSource,
    Signature,
)

__all__ = [
    "MAX_INPUT_PIXELS",
    "CharacterPrompt",
    "ImageMetadata",
    "MetadataFormat",
    "MetadataSource",
    "Signature",
    "ensure_rgb",
    "read_image",
    "read_metadata",
]

MAX_INPUT_PIXELS = 100_000_000  # far above any NovelAI output (max ~3 MP); guards decompression bombs
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def _value_error_reason(exc: ValueError) -> str:
    if "MAX_TEXT_CHUNK" in str(exc):  # PIL refuses to inflate a huge zTXt/iTXt: a text bomb
        return "a compressed PNG text chunk inflates past the size limit (gzip bomb)"
    return f"corrupt image: {exc}"


def _value_error(path: Path, exc: ValueError) -> InputError:
    reason = _value_error_reason(exc)
    return UnsafeInputError(path, reason) if "bomb" in reason else InputError(path, reason)


def refuse_special_file(path: Path, st: os.stat_result) -> None:
    """Refuse a FIFO, socket or device named like an image, from its stat alone.

    Opening a FIFO for reading blocks until some writer comes, and a device may never end: either would
    hang the caller. `st` follows a symbolic link (the user named the file, so a link to an image is fine).
    """
    if not stat.S_ISREG(st.st_mode) and not stat.S_ISDIR(st.st_mode):
        raise InputError(path, "not a regular file")


def _open(path: Path, data: bytes | None) -> Image.Image:
    if data is not None:
        size = len(data)
    else:
        try:
            st = path.stat()
        except OSError as exc:
            raise InputError(path, f"cannot read file: {exc.strerror or exc}") from exc
        if stat.S_ISDIR(st.st_mode):
            raise InputError(path, "is a directory, not an image file")
        refuse_special_file(path, st)
        size = st.st_size
    if size == 0:
        raise InputError(path, "empty file (0 bytes)")
    try:
        # The guard is our own cap below, not PIL's warning (a 89-100 MP input may still print that
        # warning; silencing it with catch_warnings would not be thread-safe in the daemon).
        image = Image.open(path if data is None else io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise UnsafeInputError(path, f"pixel bomb: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise NotAnImageError(path, "not an image (unrecognised file format)") from exc
    except ValueError as exc:
        raise _value_error(path, exc) from exc
    except (OSError, SyntaxError, EOFError) as exc:
        raise InputError(path, f"corrupt image header: {exc}") from exc
    width, height = image.size
    if width * height > MAX_INPUT_PIXELS:
        image.close()
        limit = MAX_INPUT_PIXELS // 1_000_000
        raise UnsafeInputError(path, f"pixel bomb: {width}x{height} is over {limit} MP")
    return image


def _load(image: Image.Image, path: Path) -> None:
    if ImageFile.LOAD_TRUNCATED_IMAGES:  # someone flipped the global: truncated files would pass
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES must stay False")
    try:
        image.load()
    except (OSError, EOFError, SyntaxError, zlib.error) as exc:
        raise InputError(path, f"truncated or corrupt image data: {exc}") from exc
    except ValueError as exc:
        raise _value_error(path, exc) from exc
    except Image.DecompressionBombError as exc:
        raise UnsafeInputError(path, f"pixel bomb: {exc}") from exc


def _alpha_plane(image: Image.Image) -> np.ndarray | None:
    """The alpha plane when the image has one (RGBA, LA, palette or grey with tRNS)."""
    if image.size[0] * image.size[1] < HEADER_BITS:
        return None
    if image.mode in ("RGBA", "LA"):
        return np.asarray(image.getchannel("A"))
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        return np.asarray(image.convert("RGBA").getchannel("A"))
    return None


def _extract(image: Image.Image, check_signature: bool) -> ImageMetadata:
    text_chunks: dict[str, str] = {}
    if image.format == "PNG":
        # After load(), PIL's `text` holds tEXt/iTXt/zTXt from before *and* after IDAT.
        text_chunks = {str(k): str(v) for k, v in getattr(image, "text", {}).items()}
        fields, source = text_chunks, MetadataSource.TEXT
    else:
        fields, source = read_exif_texts(image), MetadataSource.EXIF
    alpha = _alpha_plane(image)
    payload: StealthPayload | None = decode_stealth(alpha) if alpha is not None else None
    return detect(image, fields, source, payload, text_chunks, check_signature=check_signature)


def read_image(
    path: Path, *, check_signature: bool = True, data: bytes | None = None
) -> tuple[Image.Image, ImageMetadata]:
    """Decode fully and read metadata. Raises InputError when the image itself is unusable.

    check_signature=False skips NovelAI's ed25519 check (signature is then `unchecked` when the
    file carries one): the refine path does not need it and it costs ~10 ms per megapixel.
    data: the file's bytes when the caller has read them already (run_job hashes them); those are
    decoded instead of reading `path` again, which may have changed meanwhile. `path` names errors.
    """
    path = Path(path)
    image = _open(path, data)
    _load(image, path)
    meta = _extract(image, check_signature)
    if image.format in ("JPEG", "WEBP", "TIFF", "MPO"):
        # Metadata (and the NAI signature) refer to the stored pixels; the job wants them upright.
        transposed = ImageOps.exif_transpose(image)
        if transposed is not None and transposed is not image:
            image = transposed
    return image, meta


def read_metadata(path: Path, *, check_signature: bool = True) -> ImageMetadata:
    """Metadata only (the image is still decoded: stealth lives in the pixels)."""
    image, meta = read_image(path, check_signature=check_signature)
    image.close()
    return meta


def ensure_rgb(image: Image.Image, source: Path | str = "image") -> Image.Image:
    """Drop alpha and palettes: NAI's alpha channel carries stealth bits, not transparency."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "P", "PA", "L", "1", "RGBa", "La", "CMYK", "YCbCr", "I;16", "I", "F"):
        if image.mode in ("I;16", "I", "F"):
            # 16-bit/float grey: scale into 8 bits rather than clipping to white.
            arr = np.asarray(image, dtype=np.float64)
            top = 65535.0 if image.mode != "F" else max(1.0, float(arr.max()))
            image = Image.fromarray(np.clip(arr / top * 255.0, 0, 255).astype(np.uint8), "L")
        return image.convert("RGB")
    raise InputError(source, f"unsupported colour mode {image.mode}")
