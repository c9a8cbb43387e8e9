"""diffusers UNet module paths -> LDM/sgm ("original Stable Diffusion") module paths.

Single-file checkpoints and Kohya LoRAs trained with sd-scripts name UNet layers the LDM way
(`input_blocks.4.1.transformer_blocks.0.attn1.to_q`), diffusers the other way
(`down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q`). We derive the LDM name of every module
of a loaded UNet from its config, so the mapping is an exact table lookup and follows the model's own
shape (SD1.5: 4 levels; SDXL: 3 levels, no downsampler on the last, no attention on the first).

LDM numbers the encoder as one flat list: slot 0 is conv_in, then per level `layers_per_block`
resnet(+attention) slots and one downsampler slot. The decoder has `layers_per_block + 1` slots per
level; the upsampler sits after the resnet (index 1) or after resnet+attention (index 2).
"""

from __future__ import annotations

import torch

_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_TOP = {
    "conv_in": "input_blocks.0.0",
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}


def _resnet_part(rest: list[str]) -> str:
    return ".".join([_RESNET.get(rest[0], rest[0]), *rest[1:]]) if rest else ""


def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p)


def unet_ldm_name(name: str, layers_per_block: int, up_has_attention: tuple[bool, ...]) -> str | None:
    """The LDM path of a diffusers UNet module or parameter path; None for names LDM has no slot for.

    `up_has_attention[i]`: whether up block i has cross-attention (decides the upsampler's index)."""
    for src, dst in _TOP.items():
        if name == src or name.startswith(src + "."):
            return dst + name[len(src) :]
    p = name.split(".")
    try:
        if p[0] == "down_blocks":
            level = int(p[1])
            if p[2] == "downsamplers":  # down_blocks.i.downsamplers.0.conv -> input_blocks.N.0.op
                return _join(f"input_blocks.{(layers_per_block + 1) * (level + 1)}.0.op", ".".join(p[5:]))
            slot = (layers_per_block + 1) * level + int(p[3]) + 1
            if p[2] == "attentions":
                return _join(f"input_blocks.{slot}.1", ".".join(p[4:]))
            return _join(f"input_blocks.{slot}.0", _resnet_part(p[4:]))
        if p[0] == "up_blocks":
            level = int(p[1])
            per_level = layers_per_block + 1
            if p[2] == "upsamplers":
                index = 2 if up_has_attention[level] else 1
                return _join(
                    f"output_blocks.{per_level * level + per_level - 1}.{index}.conv", ".".join(p[5:])
                )
            slot = per_level * level + int(p[3])
            if p[2] == "attentions":
                return _join(f"output_blocks.{slot}.1", ".".join(p[4:]))
            return _join(f"output_blocks.{slot}.0", _resnet_part(p[4:]))
        if p[0] == "mid_block":
            if p[1] == "attentions":
                return _join("middle_block.1", ".".join(p[3:]))
            return _join(f"middle_block.{2 * int(p[2])}", _resnet_part(p[3:]))
    except (IndexError, ValueError):
        return None
    return None


def unet_ldm_table(unet: torch.nn.Module) -> dict[str, str]:
    """LDM module path -> diffusers module path, for every Linear/Conv2d of a loaded UNet."""
    cfg = unet.config
    up_attention = tuple("CrossAttn" in t for t in cfg.up_block_types)
    table = {}
    for name, module in unet.named_modules():
        if isinstance(module, torch.nn.Linear | torch.nn.Conv2d):
            ldm = unet_ldm_name(name, cfg.layers_per_block, up_attention)
            if ldm is not None:
                table[ldm] = name
    return table
