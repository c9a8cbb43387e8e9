"""How much memory each tiled-VAE mode needs, and which mode to run with what is free.

The estimates count the activations the SD VAE keeps alive, from its architecture (channel widths,
resolution), not from a profile: the widest stage dominates. Decoder, last level, first resnet:
its input (c1 = block_out_channels[1] channels at full resolution) is held as the residual while
GroupNorm and SiLU each make a c1 copy and conv1 makes a c0 one: ≈ (3·c1 + c0) per pixel.
Encoder, first level: ≈ 4·c0 per pixel. Tiles at a GroupNorm barrier hold residual + current
activation, ≈ (c1 + c0) per pixel (decoder), 2·c0 (encoder), times the halo overhead.

Calibrated against peak RSS on CPU (fp32, SD1.5 shapes, 384×576 px, 16-latent cores; 2-core dev
box): untiled decode 872 MB measured / 796 MB counted, untiled encode 540 / 472, exact decode
1455 / 1432, exact encode 1481 / 849 (CPU convs reorder into blocked layouts, and malloc keeps freed
blocks). Hence the slack factors below; they are CPU numbers and want re-measuring on a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["VaeMemory", "VaePlan", "choose_vae_plan", "estimate_vae_memory"]

# Share of the free memory we let ourselves plan for: allocator fragmentation and the UNet/upscaler
# caches left by earlier stages make the rest unusable in practice.
HEADROOM = 0.8
UNTILED_SLACK = 1.15  # measured / counted, untiled passes (worst of encode and decode)
POOLED_SLACK = 1.75  # measured / counted, exact mode (encoder, the worse one)


@dataclass(frozen=True, slots=True)
class VaeMemory:
    """Bytes: `untiled` peak of a plain pass; `head` the whole-latent stage; `pooled` all tiles'
    activations parked at one GroupNorm barrier; `tile` the working set of one tile in flight."""

    untiled: int
    head: int
    pooled: int
    tile: int


@dataclass(frozen=True, slots=True)
class VaePlan:
    mode: str  # "off" | "exact" | "low-memory"
    park_on_host: bool = False


def estimate_vae_memory(
    block_out_channels: tuple[int, ...],
    op: str,
    height: int,
    width: int,
    dtype_bytes: int,
    core: int,
    halo: int,
) -> VaeMemory:
    """Estimate for decoding to / encoding from a height x width px image with tile cores of `core`
    latent px and a halo of `halo` latent px."""
    if op not in ("encode", "decode"):
        raise ValueError(f"op must be encode or decode, got {op!r}")
    c0, c1, c_last = (
        block_out_channels[0],
        block_out_channels[min(1, len(block_out_channels) - 1)],
        block_out_channels[-1],
    )
    pixels = height * width
    latent = pixels // 64
    if op == "decode":
        per_px_untiled, per_px_parked = 3 * c1 + c0, c1 + c0
    else:
        per_px_untiled, per_px_parked = 4 * c0, 2 * c0
    # Tile grid overhead: a core of c latent px is computed over (c + 2·halo)², at most.
    side = min(core, max(height, width) // 8) or 1
    halo_factor = ((side + 2 * halo) / side) ** 2
    tile_px = (side + 2 * halo) ** 2 * 64
    return VaeMemory(
        untiled=int(UNTILED_SLACK * (per_px_untiled * pixels + 6 * c_last * latent) * dtype_bytes),
        head=int(6 * c_last * latent * dtype_bytes),
        pooled=int(POOLED_SLACK * per_px_parked * pixels * dtype_bytes * min(halo_factor, 4.0)),
        # + an fp32 copy of the widest activation inside our GroupNorm
        tile=int(per_px_untiled * tile_px * dtype_bytes + c1 * tile_px * 4),
    )


def choose_vae_plan(
    mem: VaeMemory, device_free: int | None, host_free: int, requested: str = "auto"
) -> VaePlan:
    """untiled when it fits; exact with tiles waiting on the device, else in host RAM; low-memory
    when even host RAM cannot hold the pooled activations. device_free None means we run on the CPU.
    requested: "auto" | "exact" | "low-memory" | "off" (preset.vae_tiling, validated by the config)."""
    host = host_free * HEADROOM
    device = host if device_free is None else device_free * HEADROOM
    if requested == "off":
        return VaePlan("off")
    # Low-memory parks its sampled tiles in host RAM whenever there is a separate device.
    low = VaePlan("low-memory", park_on_host=device_free is not None)
    if requested == "low-memory":
        return low
    on_device = mem.head + mem.pooled + mem.tile <= device
    if requested == "exact":
        return VaePlan("exact", park_on_host=device_free is not None and not on_device)
    if mem.untiled <= device:
        return VaePlan("off")
    if on_device:
        return VaePlan("exact")
    if device_free is not None and mem.head + mem.tile <= device and mem.pooled <= host:
        return VaePlan("exact", park_on_host=True)
    return low
