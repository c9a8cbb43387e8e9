"""NovelAI's ed25519 `signed_hash` check (format: docs/design/nai-metadata.md, "The signature").

Message = 8-bit RGB pixels (row-major) + UTF-8 of the Comment JSON without `signed_hash`,
re-serialised the way Python's json.dumps does by default (key order kept, ASCII escapes).
A failed check is normal for resized/converted copies and never blocks reading.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from PIL import Image

# Public key published in NovelAI/novelai-image-metadata (nai_sig.py).
_NOVELAI_PUBLIC_KEY = base64.b64decode("Y2JcQAOhLwzwSDUJPNgL04nS0Tbqm7cSRc4xk0vRMic=")


def verify_signature(image: Image.Image, comment: dict[str, Any]) -> bool | None:
    """True/False when `comment` carries a signed_hash, None when it carries none."""
    signed = comment.get("signed_hash")
    if not isinstance(signed, str):
        return None
    try:
        signature = base64.b64decode(signed, validate=True)
    except (binascii.Error, ValueError):
        return False
    unsigned = {k: v for k, v in comment.items() if k != "signed_hash"}
    # Raw RGB bytes, row-major H*W*3. Packing RGBA straight to RGB skips a converted copy (~10x faster).
    packable = image.mode in ("RGB", "RGBA")
    pixels = image.tobytes("raw", "RGB") if packable else image.convert("RGB").tobytes()
    message = pixels + json.dumps(unsigned).encode("utf-8")
    try:
        Ed25519PublicKey.from_public_bytes(_NOVELAI_PUBLIC_KEY).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True
