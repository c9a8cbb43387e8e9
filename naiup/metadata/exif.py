"""Generation metadata in EXIF/XMP (JPEG, WebP), mapped to PNG text-chunk names.

NovelAI WebP: Software = the Source string, ImageDescription = 4 NULs + UTF-8 prompt,
UserComment = `ASCII\\0\\0\\0` + `{"Comment": "...", ...}`. Converted JPEGs hold the bare Comment
JSON in UserComment. A1111 writes `UNICODE\\0` + UTF-16 infotext, which becomes `parameters`.
"""

from __future__ import annotations

import re

from PIL import Image

from naiup.metadata.detect import json_object

_DOCUMENT_NAME, _IMAGE_DESCRIPTION, _SOFTWARE = 0x010D, 0x010E, 0x0131
_EXIF_IFD, _USER_COMMENT = 0x8769, 0x9286
_CREATOR_TOOL = re.compile(rb"CreatorTool(?:=\"|>)\s*([^\"<]*)")


def _latin1_to_text(value: object) -> str:
    """Pillow decodes EXIF ASCII as Latin-1; NovelAI stores UTF-8 there (padded with NULs)."""
    if isinstance(value, bytes):
        raw = value
    else:
        try:
            raw = str(value).encode("latin-1")
        except UnicodeEncodeError:
            return str(value).strip("\x00")
    return raw.decode("utf-8", errors="replace").strip("\x00")


def _decode_user_comment(value: object) -> str | None:
    if isinstance(value, str):
        return value.strip("\x00") or None
    if not isinstance(value, bytes) or len(value) < 8:
        return None
    prefix, body = value[:8], value[8:]
    if prefix.startswith(b"UNICODE"):
        # Writers disagree on byte order; the zero bytes of ASCII text give it away.
        big_endian = body[0::2].count(0) >= body[1::2].count(0)
        text = body.decode("utf-16-be" if big_endian else "utf-16-le", errors="replace")
    else:  # ASCII, JIS, undefined: NovelAI and converters put UTF-8 here
        text = body.decode("utf-8", errors="replace")
    return text.strip("\x00") or None


def read_exif_texts(image: Image.Image) -> dict[str, str]:
    """EXIF/XMP fields under the names NovelAI uses in PNG chunks (Title, Description, Software,
    Source, Comment) plus `parameters` for non-JSON UserComment text."""
    out: dict[str, str] = {}
    try:
        exif = image.getexif()
        ifd = exif.get_ifd(_EXIF_IFD)
    except Exception:  # malformed EXIF must not make the image unreadable
        exif, ifd = {}, {}
    if _DOCUMENT_NAME in exif:
        out["Title"] = _latin1_to_text(exif[_DOCUMENT_NAME])
    if _IMAGE_DESCRIPTION in exif:
        out["Description"] = _latin1_to_text(exif[_IMAGE_DESCRIPTION])
    software = _latin1_to_text(exif[_SOFTWARE]) if _SOFTWARE in exif else ""
    if software == "NovelAI":
        out["Software"] = software
    elif software.startswith("NovelAI") or software.startswith("Stable Diffusion"):
        out["Software"], out["Source"] = "NovelAI", software  # the WebP writer puts Source here
    elif software:
        out["Software"] = software
    comment = _decode_user_comment(ifd.get(_USER_COMMENT))
    if comment is not None:
        wrapped = json_object(comment)
        if wrapped is not None and isinstance(wrapped.get("Comment"), str):
            out.update({k: v for k, v in wrapped.items() if isinstance(v, str)})
        elif wrapped is not None:
            out["Comment"] = comment  # a converted JPEG: the bare Comment JSON
        else:
            out["parameters"] = comment
    xmp = image.info.get("xmp")
    if isinstance(xmp, bytes | str) and "Software" not in out:
        found = _CREATOR_TOOL.search(xmp if isinstance(xmp, bytes) else xmp.encode("utf-8"))
        if found and found.group(1).strip() == b"NovelAI":
            out["Software"] = "NovelAI"
    return out
