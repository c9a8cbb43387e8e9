"""Reading NovelAI / A1111 / ComfyUI generation metadata from images. Never imports torch: the daemon's
stabiliser and `naiup info` use it without loading the engine.

Modules: read (open an image safely, extract its metadata), detect (which generator wrote it), types,
stealth (NovelAI's alpha-channel payload), exif (WebP/JPEG text), signature (NovelAI's ed25519
signature), nai_syntax (NovelAI prompt syntax -> A1111 syntax).
"""

from naiup.metadata.read import ensure_rgb, read_image, read_metadata, refuse_special_file
from naiup.metadata.types import CharacterPrompt, ImageMetadata, MetadataFormat, MetadataSource, Signature

__all__ = [
    "CharacterPrompt",
    "ImageMetadata",
    "MetadataFormat",
    "MetadataSource",
    "Signature",
    "ensure_rgb",
    "read_image",
    "read_metadata",
    "refuse_special_file",
]
