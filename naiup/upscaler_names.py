"""The upscaler names a preset may give instead of a file path, without torch: the config checks them
at load (naiup.config.schema) and the engine resolves them to weights (naiup.engine.upscale.upscaler).
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

LANCZOS = "lanczos"  # plain resampling, no model (any capitalisation)
# Built-in names -> file name. The first is shipped in naiup/data/upscalers; the others are looked up
# in the user's model folder (user_models_dir below) because their licence or size
# keeps them out.
BUILTIN_UPSCALERS: dict[str, str] = {
    "realcugan-2x": "realcugan-se-up2x-conservative.safetensors",
    "realesrgan-x4-anime": "RealESRGAN_x4plus_anime_6B.safetensors",
    "realesr-animevideov3-x4": "realesr-animevideov3-x4.safetensors",
}
SHIPPED = frozenset({"realcugan-2x"})


def is_lanczos(spec: str) -> bool:
    return spec.strip().lower() == LANCZOS


def upscaler_names() -> list[str]:
    """Every name that is not a path: the built-ins, then lanczos."""
    return [*BUILTIN_UPSCALERS, LANCZOS]


def user_models_dir() -> Path:
    """Where optional built-ins (not shipped) are looked up; NAIUP_MODELS_DIR overrides."""
    return Path(os.environ.get("NAIUP_MODELS_DIR") or Path(platformdirs.user_data_dir("naiup")) / "upscalers")


def missing_weights(spec: str) -> Path | None:
    """Where the weights of built-in upscaler `spec` must be put, when it is one that is not shipped and
    they are not there yet; None otherwise. Lets the config mark such a preset without loading torch."""
    if spec not in BUILTIN_UPSCALERS or spec in SHIPPED:
        return None
    path = user_models_dir() / BUILTIN_UPSCALERS[spec]
    return None if path.is_file() else path


def not_shipped(spec: str, path: Path) -> str:
    """What to do about missing weights of a built-in upscaler (`path`: from missing_weights)."""
    return (
        f"the built-in upscaler {spec!r} is not shipped; put {path.name} in {path.parent} "
        "(or set the preset's upscaler to a file path, 'realcugan-2x' or 'lanczos')"
    )
