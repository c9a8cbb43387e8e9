"""Tiled VAE encode/decode (tiling issue).

CONTRACT:
    encode(vae: AutoencoderKL, pixels: (1,3,H,W) in [-1,1], *, mode: "auto"|"exact"|"low-memory"|"off",
           generator: torch.Generator | None = None, sample: bool = False) -> latent (1,4,H/8,W/8),
           already multiplied by vae.config.scaling_factor
    decode(vae, latent (scaled), *, mode) -> pixels (1,3,H,W) in [-1,1]
    "off"/untiled is what the engine-core loop uses until tiling lands.
"""
