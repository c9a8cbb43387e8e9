"""The config's frozen dataclasses: a leaf module (imports nothing from naiup but errors).

CONTRACT (other modules code against these names; add keys, never rename):
    Config.preset(name) -> Preset                        # ConfigError naming the known presets if unknown
    OutputConfig.output_name(src, preset_name) -> str    # "{stem}.naiup-{preset}.png" filled in
Values are validated once, where config.schema builds them; code below trusts them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from naiup.errors import ConfigError


@dataclass(frozen=True, slots=True)
class WatchConfig:
    folders: tuple[Path, ...] = ()
    recursive: bool = False
    only_novelai: bool = True
    quiet_seconds: float = 1.0  # stabiliser: size+mtime must hold this long
    rescan_seconds: float = 60.0  # periodic rescan recovers events the OS dropped
    give_up_seconds: float = 600.0  # an incomplete file older than this is failed
    process_existing: bool = False  # True: images already in a newly watched folder are processed too


@dataclass(frozen=True, slots=True)
class OutputConfig:
    name: str = "{stem}.naiup-{preset}.png"
    max_output_megapixels: float = 50.0
    png_compress_level: int = 1

    def output_name(self, src: Path, preset: str) -> str:
        """The output file name for src (validated at load: has {stem}, only known fields, ends .png)."""
        return self.name.format(stem=src.stem, preset=preset, ext=src.suffix.lstrip("."))


@dataclass(frozen=True, slots=True)
class LoraSpec:
    path: str
    weight: float = 1.0


@dataclass(frozen=True, slots=True)
class ModelConfig:
    checkpoint: str = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    vae: str = ""
    lcm_lora: str = "latent-consistency/lcm-lora-sdv1-5"
    lora_dirs: tuple[Path, ...] = ()
    loras: tuple[LoraSpec, ...] = ()
    device: str = "auto"  # auto | cuda | mps | cpu
    clip_skip: int = 1
    prediction: str = "auto"  # auto (from the file's v_pred flag / the folder's scheduler) | epsilon | v
    max_vram_gb: float = 0.0  # 0 = whatever the accelerator has free
    unet_graphs: str = "auto"  # auto | on | off: CUDA graphs (torch.compile) for the UNet tiles


# Danbooru's tags for how many characters a picture has. In a background tile they ask the model for
# a person where there is none (the "1girl in the sky" of tiled refines), while the characters they
# count already have regions of their own. Only counts: "no humans" is a background's truth and stays.
DROP_COUNT_TAGS: tuple[str, ...] = (
    "1girl", "2girls", "3girls", "4girls", "5girls", "6+girls", "multiple girls",
    "1boy", "2boys", "3boys", "4boys", "5boys", "6+boys", "multiple boys",
    "1other", "2others", "3others", "4others", "5others", "6+others", "multiple others",
    "solo", "solo focus",
)  # fmt: skip


def unet_steps(steps: int, denoise: float) -> int:
    """UNet steps an img2img refine runs: the tail int(steps x denoise) of a `steps`-step schedule,
    counted as diffusers' img2img pipeline and A1111 count them (the one formula: the config refuses
    a preset that would run none, and the sampler keeps this many timesteps)."""
    return min(int(steps * denoise), steps)


@dataclass(frozen=True, slots=True)
class Preset:
    name: str
    scale: float = 2.0
    upscaler: str = "realcugan-2x"
    refine: bool = True
    denoise: float = 0.2
    steps: int = 10
    cfg: float = 1.0
    sampler: str = "lcm"  # lcm | dmd2 | euler
    tile_size: int = 64  # latent px
    # Latent px. A quarter of the tile: as seamless as half a tile with Mixture of Diffusers on the
    # seam measurement (bench/seam_bench.py), at 1.6x instead of 3.5x the UNet work of one canvas pass.
    overlap: int = 16
    # At most this many tiles per UNet call; fewer when free GPU memory cannot hold them.
    tile_batch_size: int = 16
    tile_method: str = "mixture"  # mixture | multidiffusion
    vae_tiling: str = "auto"  # auto | exact | low-memory | off
    # Latent px: the VAE mid block's attention in windows of this size above it; 0 = always whole.
    # 256 keeps 2x of NovelAI's normal sizes (832x1216, 1024x1024) exact and cuts 4x attention 4.3x.
    vae_attention_window: int = 256
    prompt: str = "(masterpiece, best quality, highres:1.2)"
    negative_prompt: str = "(worst quality, low quality:1.4)"
    seed: str | int = "image"  # image | random | int
    use_image_prompt: bool = False
    # NovelAI V4/V4.5 character positions as regional prompts (needs use_image_prompt): auto | off.
    regions: str = "auto"
    # Fraction of the image's width and height a character's region spans, centred on its position.
    region_size: float = 0.5
    # Tags dropped from the background region's prompt (they ask for a number of people).
    background_drop_tags: tuple[str, ...] = DROP_COUNT_TAGS

    @property
    def unet_steps(self) -> int:
        return unet_steps(self.steps, self.denoise) if self.refine else 0


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    active_preset: str = "refine-2x"
    notifications: bool = True
    job_timeout_seconds: float = 600.0
    max_attempts: int = 3
    stop_grace_seconds: float = 10.0  # at SIGTERM the current job may finish within this, else requeued


@dataclass(frozen=True, slots=True)
class PauseConfig:
    on_battery: bool = True
    gpu_busy_percent: int = 0  # 0 = rule off; else pause when other processes use more than this
    processes: tuple[str, ...] = ()
    check_seconds: float = 5.0


BUILTIN_PRESETS: dict[str, Preset] = {
    "refine-2x": Preset(name="refine-2x"),
    "refine-4x": Preset(name="refine-4x", scale=4.0, upscaler="realesrgan-x4-anime", denoise=0.25, steps=8),
    "upscale-2x": Preset(name="upscale-2x", scale=2.0, upscaler="realcugan-2x", refine=False),
}


@dataclass(frozen=True, slots=True)
class Config:
    watch: WatchConfig = field(default_factory=WatchConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    pause: PauseConfig = field(default_factory=PauseConfig)
    # Excluded from the hash (a dict is unhashable) so Config stays usable as a cache key; still compared.
    presets: dict[str, Preset] = field(default_factory=lambda: dict(BUILTIN_PRESETS), hash=False)
    source: Path | None = None  # the file it came from, None for built-in defaults

    def preset(self, name: str) -> Preset:
        try:
            return self.presets[name]
        except KeyError:
            known = ", ".join(sorted(self.presets))
            raise ConfigError("presets", f"unknown preset {name!r} (known: {known})", self.source) from None
