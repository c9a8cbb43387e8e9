"""A1111-compatible prompt weighting and encoding: A1111's prompt syntax and emphasis maths, our code.

No PyPI package reproduces A1111's maths (compel and sd_embed differ), so we parse, chunk and weight
ourselves: `(x:1.2)`, `(x)` = ×1.1, `[x]` = ÷1.1, nesting multiplies, `\\(` escapes, `BREAK` closes a
chunk, long prompts go in 75-token chunks, weights scale token embeddings and the chunk mean is restored.
Clip skip lives here too, because diffusers' `clip_skip` breaks on the flattened CLIPTextModel of
transformers >= 5.6 (diffusers #14124).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from naiup.errors import ConfigError
from naiup.metadata.nai_syntax import LORA_TAG, clamp_weight

CHUNK_TOKENS = 75  # A1111 chunk length; BOS + 75 + EOS = CLIP's 77 positions
COMMA_BACKTRACK = 20  # A1111 default "comma_padding_backtrack"
BREAK = object()  # marker fragment: closes the current chunk

_ATTENTION = re.compile(
    r"""
    \\\(|\\\)|\\\[|\\]|\\\\|\\|   # escapes
    \(|\[|                        # openers
    :\s*([+-]?(?:\d+\.?\d*|\.\d+))\s*\)|  # explicit weight ":1.2)"; "1.2." is text
    \)|]|                         # closers
    [^\\()\[\]:]+|                # plain text
    :
    """,
    re.X,
)
_BREAK_WORD = re.compile(r"\s*\bBREAK\b\s*", re.S)
LORA_SUFFIXES = (".safetensors", ".ckpt", ".pt")

Fragment = tuple[str, float]


def parse_prompt_attention(text: str) -> list[Fragment | object]:
    """Split a prompt into (text, weight) runs and BREAK markers, as A1111's parser defines them.

    Unbalanced openers apply to the end of the text; runs of equal weight are merged. Weights are
    kept finite (nai_syntax.clamp_weight): a prompt may come from any image's metadata.
    """
    res: list[list] = []
    round_open: list[int] = []
    square_open: list[int] = []

    def multiply_from(start: int, factor: float) -> None:
        for item in res[start:]:
            if item[0] is not BREAK:
                item[1] = clamp_weight(item[1] * factor)

    for m in _ATTENTION.finditer(text):
        tok, weight = m.group(0), m.group(1)
        if tok.startswith("\\"):
            res.append([tok[1:], 1.0])
        elif tok == "(":
            round_open.append(len(res))
        elif tok == "[":
            square_open.append(len(res))
        elif weight is not None and round_open:
            multiply_from(round_open.pop(), float(weight))
        elif tok == ")" and round_open:
            multiply_from(round_open.pop(), 1.1)
        elif tok == "]" and square_open:
            multiply_from(square_open.pop(), 1 / 1.1)
        else:
            for i, part in enumerate(_BREAK_WORD.split(tok)):
                if i > 0:
                    res.append([BREAK, -1.0])
                res.append([part, 1.0])
    for pos in round_open:
        multiply_from(pos, 1.1)
    for pos in square_open:
        multiply_from(pos, 1 / 1.1)

    merged: list[list] = []
    for item in res:
        if item[0] is BREAK or not merged or merged[-1][0] is BREAK or merged[-1][1] != item[1]:
            merged.append(item)
        else:
            merged[-1][0] += item[0]
    out: list[Fragment | object] = [BREAK if t is BREAK else (t, w) for t, w in merged]
    return out or [("", 1.0)]


@dataclass(frozen=True, slots=True)
class Chunk:
    tokens: tuple[int, ...]  # 77 ids: BOS + 75 + EOS
    weights: tuple[float, ...]  # 77 multipliers


def chunk_tokens(
    fragments: Iterable[tuple[list[int], float] | object], bos: int, eos: int, comma: int | None
) -> list[Chunk]:
    """A1111's chunking: 75 tokens per chunk, BREAK closes one, a full chunk moves the words after a
    recent comma (<= 20 tokens back) to the next chunk; chunks are padded with EOS at weight 1."""
    chunks: list[Chunk] = []
    toks: list[int] = []
    weights: list[float] = []
    last_comma = -1

    def close() -> None:
        nonlocal toks, weights, last_comma
        pad = CHUNK_TOKENS - len(toks)
        chunks.append(Chunk((bos, *toks, *[eos] * pad, eos), (1.0, *weights, *[1.0] * pad, 1.0)))
        toks, weights, last_comma = [], [], -1

    for frag in fragments:
        if frag is BREAK:
            close()
            continue
        ids, weight = frag  # type: ignore[misc]
        for tok in ids:
            if tok == comma:
                last_comma = len(toks)
            elif len(toks) == CHUNK_TOKENS and last_comma != -1 and len(toks) - last_comma <= COMMA_BACKTRACK:
                keep = last_comma + 1
                moved_t, moved_w = toks[keep:], weights[keep:]
                toks, weights = toks[:keep], weights[:keep]
                close()
                toks, weights = moved_t, moved_w
            if len(toks) == CHUNK_TOKENS:
                close()
            toks.append(tok)
            weights.append(weight)
    if toks or not chunks:
        close()
    return chunks


def extract_lora_tags(prompt: str) -> tuple[str, list[tuple[str, float]]]:
    """Strip A1111 `<lora:name:weight>` tags; returns (text without tags, [(name, weight)])."""
    tags = [(m.group(1).strip(), _lora_weight(m)) for m in LORA_TAG.finditer(prompt)]
    return LORA_TAG.sub("", prompt), tags


def _lora_weight(tag: re.Match[str]) -> float:
    if not tag.group(2):
        return 1.0
    try:
        return float(tag.group(2))
    except ValueError:  # "1.2.3" or "." match the tag's pattern: a typo in the prompt, not a crash
        raise ConfigError("prompt", f"{tag.group(0)} has a malformed weight {tag.group(2)!r}") from None


def resolve_lora_name(name: str, lora_dirs: Iterable[Path]) -> Path:
    """Find `<name>.safetensors` (or .ckpt/.pt) in the LoRA folders, subfolders included as in A1111."""
    dirs = list(lora_dirs)
    for folder in dirs:
        for suffix in LORA_SUFFIXES:
            direct = Path(folder) / f"{name}{suffix}"
            if direct.is_file():
                return direct
        for suffix in LORA_SUFFIXES:
            found = sorted(Path(folder).rglob(f"{Path(name).name}{suffix}"))
            if found:
                return found[0]
    where = ", ".join(str(d) for d in dirs) or "none configured"
    raise ConfigError("model.lora_dirs", f"LoRA <lora:{name}> from the prompt not found (searched: {where})")


def final_norm(text_encoder: torch.nn.Module) -> torch.nn.Module:
    """The final LayerNorm: flattened CLIPTextModel (transformers >= 5.6) or the older `.text_model`."""
    inner = getattr(text_encoder, "text_model", text_encoder)
    return inner.final_layer_norm


# Embeddings kept, most recently used first. Each sits on the device (~120 KB per 75-token chunk in
# fp16); with use_image_prompt every image brings a new prompt, and the daemon runs for weeks.
PROMPT_CACHE_SIZE = 64


class PromptEncoder:
    """Encodes A1111-syntax prompts to (1, 77·k, width) embeddings; caches per prompt text.

    `device`: where every embedding it returns (and caches) lives, the UNet's device; None: wherever
    the text encoder ran. A text encoder that waits in host RAM runs on the CPU when asked for a text
    outside its visit to the device: its output must still be cached on the UNet's device, or a later
    job joins it with embeddings made on the device (padding, CFG's batch) and fails on every job."""

    def __init__(
        self, tokenizer, text_encoder: torch.nn.Module, clip_skip: int = 1, device: torch.device | None = None
    ) -> None:
        self.tokenizer, self.text_encoder, self.clip_skip = tokenizer, text_encoder, clip_skip
        self.device = device
        self.bos, self.eos = tokenizer.bos_token_id, tokenizer.eos_token_id
        comma = tokenizer(",", add_special_tokens=False).input_ids
        self.comma = comma[0] if len(comma) == 1 else None
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()

    def clear_cache(self) -> None:
        """Call after the text encoder's weights change (a TE LoRA fused or restored)."""
        self._cache.clear()

    def chunks(self, prompt: str) -> list[Chunk]:
        parsed = parse_prompt_attention(prompt)
        texts = [p[0] for p in parsed if p is not BREAK]  # type: ignore[index]
        ids = iter(self.tokenizer(texts, add_special_tokens=False, truncation=False).input_ids)
        frags = [p if p is BREAK else (next(ids), p[1]) for p in parsed]  # type: ignore[index]
        return chunk_tokens(frags, self.bos, self.eos, self.comma)

    @torch.no_grad()
    def encode(self, prompt: str) -> torch.Tensor:
        cached = self._cache.get(prompt)
        if cached is not None:
            self._cache.move_to_end(prompt)
            return cached
        cached = torch.cat([self._encode_chunk(c) for c in self.chunks(prompt)], dim=1)
        if self.device is not None:
            cached = cached.to(self.device)
        self._cache[prompt] = cached
        if len(self._cache) > PROMPT_CACHE_SIZE:  # least recently used out: it lives on the GPU
            self._cache.popitem(last=False)
        return cached

    def _encode_chunk(self, chunk: Chunk) -> torch.Tensor:
        dev = next(self.text_encoder.parameters()).device
        ids = torch.tensor([chunk.tokens], device=dev)
        if self.clip_skip == 1:
            z = self.text_encoder(ids).last_hidden_state
        else:
            hidden = self.text_encoder(ids, output_hidden_states=True).hidden_states
            z = final_norm(self.text_encoder)(hidden[-self.clip_skip])
        return emphasize(z, chunk.weights)

    def cached(self, prompt: str, negative: str | None) -> bool:
        """Whether pair(prompt, negative) runs no text encoder: every text it encodes is cached (the
        Refiner brings text encoders that wait in host RAM to the device only when not). Ask
        cached("", None) for the empty prompt alone (regions pad with it at any CFG)."""
        texts = [prompt] if negative is None else [prompt, negative, ""]
        return all(t in self._cache for t in texts)

    def pair(self, prompt: str, negative: str | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(cond, uncond) of equal length; uncond None when CFG is off (negative None)."""
        cond = self.encode(prompt)
        if negative is None:
            return cond, None
        return pad_to_same_length(cond, self.encode(negative), self.encode(""))


def emphasize(z: torch.Tensor, weights: tuple[float, ...]) -> torch.Tensor:
    """A1111's "Original" emphasis on one chunk (1, 77, width): scale each token, then restore the
    chunk's mean so weights shift direction rather than overall magnitude. Returns fp32."""
    z = z.float()
    mean_before = z.mean()
    z = z * torch.tensor(weights, device=z.device, dtype=z.dtype)[None, :, None]
    mean_after = z.mean()
    # A zero mean (possible only with untrained LayerNorm biases) would turn 0/0 into NaN.
    return z * (mean_before / mean_after) if mean_after != 0 else z


def pad_to_same_length(
    cond: torch.Tensor, uncond: torch.Tensor, empty: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad the shorter embedding with copies of the empty-prompt chunk (A1111's pad_cond)."""

    def grow(z: torch.Tensor, n: int) -> torch.Tensor:
        missing = (n - z.shape[1]) // empty.shape[1]
        return torch.cat([z, *[empty] * missing], dim=1) if missing else z

    n = max(cond.shape[1], uncond.shape[1])
    return grow(cond, n), grow(uncond, n)
