"""The upscaler names a preset may give instead of a file path, without torch: the config checks them
at load (naiup.config.schema) and the engine resolves them to weights (naiup.engine.upscale.upscaler).
"""

from __future__ import annotations

LANCZOS = "lanczos"  # plain resampling, no model (any capitalisation)
# Built-in names -> file name. The first is shipped in naiup/data/upscalers; the others are looked up
# in the user's model folder (engine.upscale.upscaler.user_models_dir) because their licence or size
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
