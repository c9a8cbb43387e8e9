"""SDXL prompt conditioning with A1111 semantics: two text encoders, a pooled vector and size ids.

What the SDXL UNet consumes, and the choices made here:
- context (1, 77·k, w1+w2): per 75-token chunk, CLIP-L's and bigG's *penultimate* hidden states side
  by side (CLIP-L first), with no final LayerNorm (unlike SD1.5's clip skip). Clip skip N selects
  `hidden_states[-max(N, 2)]` on both: SDXL already skips one layer, so "clip skip 2" (Pony's
  advice) is the default and 1 means the same.
- Prompt syntax is the SD1.5 encoder's (weights, BREAK, 75-token chunks with comma back-tracking):
  both encoders share one BPE vocabulary, so one chunking serves both. bigG's padding is token 0
  (`!`) after the first end-of-text, CLIP-L's is end-of-text; padded positions are part of the
  context, so the difference matters. Emphasis and the mean restore run per chunk and per encoder.
- pooled (1, P): bigG's projected end-of-text embedding of the *first* chunk, before emphasis.
- An empty negative prompt is all zeros (context and pooled), as A1111 and Forge do for SDXL.
- time_ids (1, 6): (orig_h, orig_w, crop_top, crop_left, target_h, target_w) in pixels. Tiled refine
  uses ONE vector for the whole canvas with crop (0, 0), repeated for every tile: overlapping tiles
  then agree on what image they belong to, which keeps the blended predictions consistent.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch

from naiup.engine.diffusion.prompt_encoder import (
    PROMPT_CACHE_SIZE,
    Chunk,
    PromptEncoder,
    emphasize,
    pad_to_same_length,
)


@dataclass(frozen=True, slots=True)
class SDXLCond:
    context: torch.Tensor  # (1, 77·k, w1 + w2), fp32
    pooled: torch.Tensor  # (1, P), fp32

    def added(self, time_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """The UNet's `added_cond_kwargs` for one sample."""
        return {"text_embeds": self.pooled, "time_ids": time_ids}

    def zeros(self, tokens: int | None = None) -> SDXLCond:
        n = tokens or self.context.shape[1]
        return SDXLCond(self.context.new_zeros(1, n, self.context.shape[2]), torch.zeros_like(self.pooled))


def time_ids(latent_hw: tuple[int, int], vae_scale: int) -> torch.Tensor:
    """Size conditioning of a whole canvas: original = target = its pixel size, crop (0, 0)."""
    h, w = latent_hw[0] * vae_scale, latent_hw[1] * vae_scale
    return torch.tensor([[h, w, 0, 0, h, w]], dtype=torch.float32)


def vae_scale_factor(vae: torch.nn.Module) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)


class SDXLPromptEncoder:
    """Encodes A1111-syntax prompts for SDXL; caches per prompt text (clear after a TE LoRA change).
    `device`: where the embeddings it returns and caches live, as PromptEncoder's."""

    def __init__(
        self,
        tokenizer,
        text_encoder,
        tokenizer_2,
        text_encoder_2,
        clip_skip: int = 1,
        device: torch.device | None = None,
    ) -> None:
        self.device = device
        # The SD1.5 encoder does the parsing and chunking; its own encode() is not used.
        self._chunker = PromptEncoder(tokenizer, text_encoder, clip_skip)
        self.text_encoder, self.text_encoder_2 = text_encoder, text_encoder_2
        self.layer = max(clip_skip, 2)
        self.eos, self.pad_2 = tokenizer.eos_token_id, tokenizer_2.pad_token_id
        self._cache: OrderedDict[str, SDXLCond] = OrderedDict()

    def clear_cache(self) -> None:
        self._cache.clear()

    def chunks(self, prompt: str) -> list[Chunk]:
        return self._chunker.chunks(prompt)

    @torch.no_grad()
    def encode(self, prompt: str) -> SDXLCond:
        cached = self._cache.get(prompt)
        if cached is not None:
            self._cache.move_to_end(prompt)
            return cached
        parts = [self._encode_chunk(c) for c in self.chunks(prompt)]
        cached = SDXLCond(torch.cat([p[0] for p in parts], dim=1), parts[0][1])
        if self.device is not None:
            cached = SDXLCond(cached.context.to(self.device), cached.pooled.to(self.device))
        self._cache[prompt] = cached
        if len(self._cache) > PROMPT_CACHE_SIZE:
            self._cache.popitem(last=False)
        return cached

    def _ids_2(self, tokens: tuple[int, ...]) -> list[int]:
        first_end = tokens.index(self.eos)
        return [*tokens[: first_end + 1], *[self.pad_2] * (len(tokens) - first_end - 1)]

    def _encode_chunk(self, chunk: Chunk) -> tuple[torch.Tensor, torch.Tensor]:
        dev1 = next(self.text_encoder.parameters()).device
        dev2 = next(self.text_encoder_2.parameters()).device
        out1 = self.text_encoder(torch.tensor([chunk.tokens], device=dev1), output_hidden_states=True)
        out2 = self.text_encoder_2(
            torch.tensor([self._ids_2(chunk.tokens)], device=dev2), output_hidden_states=True
        )
        z1 = emphasize(out1.hidden_states[-self.layer], chunk.weights)
        z2 = emphasize(out2.hidden_states[-self.layer], chunk.weights).to(z1.device)
        return torch.cat([z1, z2], dim=-1), out2.text_embeds.float().to(z1.device)

    def cached(self, prompt: str, negative: str | None) -> bool:
        """Whether pair(prompt, negative) runs no text encoder: every text it encodes is cached."""
        texts = [prompt] if negative in (None, "") else [prompt, negative, ""]
        return all(t in self._cache for t in texts)

    def pair(self, prompt: str, negative: str | None) -> tuple[SDXLCond, SDXLCond | None]:
        """(cond, uncond) with contexts of equal length; uncond None when CFG is off (negative None).
        An empty negative is zeros of the prompt's length; otherwise the shorter one is padded with
        empty-prompt chunks (A1111's pad_cond)."""
        cond = self.encode(prompt)
        if negative is None:
            return cond, None
        if negative == "":
            return cond, cond.zeros()
        uncond = self.encode(negative)
        c, u = pad_to_same_length(cond.context, uncond.context, self.encode("").context)
        return SDXLCond(c, cond.pooled), SDXLCond(u, uncond.pooled)
