"""diffusers' own VAE encode/decode with the tiled VAE's signature: the untiled reference the Refiner
is compared against, as Refiner(..., wrap_predictor=None, encode=encode_untiled, decode=decode_untiled)."""

from __future__ import annotations

import torch


@torch.no_grad()
def encode_untiled(
    vae,
    pixels: torch.Tensor,
    *,
    mode: str = "off",
    generator: torch.Generator | None = None,
    sample: bool = False,
    attention_window: int = 0,
) -> torch.Tensor:
    """pixels (1,3,H,W) in [-1,1] -> scaled latent (fp32); `mode` and `attention_window` are the tiled
    version's, ignored: this is always the plain pass with whole attention."""
    dist = vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist
    z = dist.sample(generator) if sample else dist.mode()
    return z.float() * vae.config.scaling_factor


@torch.no_grad()
def decode_untiled(
    vae, latent: torch.Tensor, *, mode: str = "off", attention_window: int = 0
) -> torch.Tensor:
    return vae.decode((latent / vae.config.scaling_factor).to(vae.device, vae.dtype)).sample.float()
