"""The config's frozen dataclasses: a leaf module (imports nothing from naiup but errors).

CONTRACT (other modules code against these names; add keys, never rename):
    Config.preset(name) -> Preset                        # ConfigError naming the known presets if unknown
    Config.model_for(preset) -> ModelConfig              # its model set; ConfigError if not filled in
    Config.model_set(name) -> ModelConfig                # "default" is [model]; others are [models.NAME]
    OutputConfig.output_name(src, preset_name) -> str    # "{stem}.naiup-{preset}.png" filled in
Values are validated once, where config.schema builds them; code below trusts them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from naiup.errors import ConfigError
from naiup.upscaler_names import missing_weights


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
    # ControlNet tile of the checkpoint's family (a diffusers folder or one weight file); "" = none.
    # Loaded with the set; presets use it through control_strength.
    controlnet: str = ""


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
    # ControlNet tile ([model] controlnet) steering every tile with its own crop of the upscaled input:
    # the scale of its residuals, 0 = off. It lets a higher denoise add detail without inventing content.
    control_strength: float = 0.0
    # The part of the UNet steps it runs in, as fractions: step i of n runs it when [i/n, (i+1)/n] lies
    # within [control_start, control_end] (diffusers' control_guidance_start/end).
    control_start: float = 0.0
    control_end: float = 1.0
    # NovelAI V4/V4.5 character positions as regional prompts (needs use_image_prompt): auto | off.
    regions: str = "auto"
    # Fraction of the image's width and height a character's region spans, centred on its position.
    region_size: float = 0.5
    # Tags dropped from the background region's prompt (they ask for a number of people).
    background_drop_tags: tuple[str, ...] = DROP_COUNT_TAGS
    # The model set it refines with: "default" ([model]) or the NAME of a [models.NAME] table.
    model: str = "default"

    @property
    def unet_steps(self) -> int:
        return unet_steps(self.steps, self.denoise) if self.refine else 0

    @property
    def control_scales(self) -> tuple[float, ...]:
        """The ControlNet's conditioning scale at each UNet step; 0 where it does not run."""
        return control_scales(self.unet_steps, self.control_strength, self.control_start, self.control_end)


def control_scales(steps: int, strength: float, start: float, end: float) -> tuple[float, ...]:
    """Conditioning scale at each of `steps` UNet steps: `strength` while step i's span
    [i/steps, (i+1)/steps] lies within [start, end], else 0 (the rule diffusers' ControlNet pipelines
    apply to control_guidance_start/end, so refines can be checked against them)."""
    return tuple(
        0.0 if strength == 0 or i / steps < start or (i + 1) / steps > end else strength for i in range(steps)
    )


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


DEFAULT_MODEL_SET = "default"  # the name presets use for [model]
XL_MODEL_SET = "xl"
# Keys a [models.NAME] table takes from [model] when it leaves them out: they describe this machine,
# not a checkpoint. Every other key (vae, lcm_lora, loras, clip_skip, prediction) belongs to one
# checkpoint, so [model]'s value would be wrong for another family: those start from their defaults.
MACHINE_KEYS = ("device", "max_vram_gb", "unet_graphs", "lora_dirs")
# Named sets the built-in presets refer to, with the defaults a user's [models.NAME] table of that name
# starts from. Not usable until the user fills in `checkpoint` (naiup ships no weights): a preset that
# names one that is not filled in is refused when it is chosen, with what to add.
BUILTIN_MODEL_SETS: dict[str, ModelConfig] = {
    XL_MODEL_SET: ModelConfig(checkpoint="", lcm_lora="latent-consistency/lcm-lora-sdxl"),
}

# The SDXL presets (reasons in config.example.toml): SDXL's native 1024 px tile (128 latent) with a
# quarter-tile overlap, LCM-LoRA SDXL at CFG 1, two UNet steps on LCM's grid each.
_XL = {"model": XL_MODEL_SET, "tile_size": 128, "overlap": 32, "cfg": 1.0, "sampler": "lcm"}

BUILTIN_PRESETS: dict[str, Preset] = {
    "refine-2x": Preset(name="refine-2x"),
    "refine-4x": Preset(name="refine-4x", scale=4.0, upscaler="realesrgan-x4-anime", denoise=0.25, steps=8),
    "upscale-2x": Preset(name="upscale-2x", scale=2.0, upscaler="realcugan-2x", refine=False),
    # 8 x 0.25 = 2 UNet steps: t = 259, 139 of LCM's 8-step grid.
    "xl-refine-2x": Preset(name="xl-refine-2x", steps=8, denoise=0.25, **_XL),
    # 6 x 0.35 = 2 UNet steps: t = 339, 179 of LCM's 6-step grid, a stronger re-draw for 4x.
    "xl-refine-4x": Preset(
        name="xl-refine-4x", scale=4.0, upscaler="realesrgan-x4-anime", steps=6, denoise=0.35, **_XL
    ),
    # Refine harder with ControlNet tile keeping the picture (needs [model] controlnet): 4 UNet steps from
    # t=399 instead of 2 from 199; the ControlNet steers the first three, the last one only sharpens.
    # Reasons in config.example.toml.
    "refine-2x-strong": Preset(name="refine-2x-strong", denoise=0.4, control_strength=0.8, control_end=0.75),
    # The same for SDXL (xinsir/controlnet-tile-sdxl-1.0 or compatible in [models.xl] controlnet):
    # SDXL's native 1024 px tile (128 latent) with a quarter-tile overlap.
    "xl-refine-2x-strong": Preset(
        name="xl-refine-2x-strong", denoise=0.4, control_strength=0.8, control_end=0.75, **_XL
    ),
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
    # The [models.NAME] tables the file fills in ([model] is the set named "default"); hash=False as above.
    models: dict[str, ModelConfig] = field(default_factory=dict, hash=False)

    def preset(self, name: str) -> Preset:
        try:
            return self.presets[name]
        except KeyError:
            known = ", ".join(sorted(self.presets))
            raise ConfigError("presets", f"unknown preset {name!r} (known: {known})", self.source) from None

    def model_set_names(self) -> list[str]:
        """Every name a preset may give as `model`: default, the filled-in sets, the built-in ones."""
        return [DEFAULT_MODEL_SET, *sorted({*self.models, *BUILTIN_MODEL_SETS})]

    def model_set(self, name: str) -> ModelConfig:
        if name == DEFAULT_MODEL_SET:
            return self.model
        if name in self.models:
            return self.models[name]
        if name in BUILTIN_MODEL_SETS:
            users = sorted(p.name for p in self.presets.values() if p.model == name)
            raise ConfigError(
                f"models.{name}",
                f"is not filled in, and preset(s) {', '.join(users) or '-'} refine with it. Add"
                f' [models.{name}] with checkpoint = "<path to {_WANTS.get(name, "a checkpoint")}>"'
                " to the config file, or choose a preset of another model set",
                self.source,
            )
        known = ", ".join(self.model_set_names())
        raise ConfigError(f"models.{name}", f"is not a model set (known: {known})", self.source)

    def model_set_users(self) -> dict[str, list[str]]:
        """Each model set some refining preset uses -> the names of those presets, sorted."""
        users: dict[str, list[str]] = {}
        for preset in sorted(self.presets.values(), key=lambda p: p.name):
            if preset.refine:
                users.setdefault(preset.model, []).append(preset.name)
        return dict(sorted(users.items(), key=lambda item: item[0] != DEFAULT_MODEL_SET))

    def unfilled_note(self, name: str, users: list[str]) -> str:
        """What `config check` and doctor say about a built-in set no table fills in (not an error:
        only its presets wait for it)."""
        wants = _WANTS.get(name, "a checkpoint")
        return (
            f"is not filled in: preset(s) {', '.join(users)} refine with it once it names {wants}"
            " (config.example.toml shows how)"
        )

    def model_for(self, preset: Preset) -> ModelConfig:
        """The model set `preset` refines with (ConfigError saying what to add if it is not filled in).
        A preset that does not refine loads no SD model, so an unfilled set does not stop it: it runs
        with [model]'s device settings then."""
        if not preset.refine:
            return self.models.get(preset.model, self.model)
        return self.model_set(preset.model)

    def usable_model(self, preset: Preset) -> ModelConfig:
        """model_for(preset), also refusing a preset that steers its tiles with a ControlNet its set
        does not name: every job of it would fail. What choosing a preset (`naiup preset`, the tray)
        and the daemon's scheduler check, so such a preset is refused up front like an unfilled set."""
        model = self.model_for(preset)
        if preset.refine and preset.control_strength > 0 and not model.controlnet:
            key = set_key(preset.model)
            raise ConfigError(
                f"{key}.controlnet",
                f"is empty, but preset {preset.name} steers its tiles with a ControlNet (control_strength"
                f" = {preset.control_strength:g}). Set {key}.controlnet to a tile ControlNet of the"
                " checkpoint's family (config.example.toml shows how), or choose another preset",
                self.source,
            )
        return model

    def missing_for(self, preset: Preset) -> str | None:
        """What `preset` lacks to run, as `naiup preset` and the tray mark it ("[models.xl] in the
        config", "[model] controlnet in the config", or a built-in upscaler's weights file and the
        folder it goes in); None when nothing is missing."""
        if preset.refine:
            try:
                model = self.model_set(preset.model)
            except ConfigError:
                return f"[{set_key(preset.model)}] in the config"
            if preset.control_strength > 0 and not model.controlnet:
                return f"[{set_key(preset.model)}] controlnet in the config"
        weights = missing_weights(preset.upscaler)
        return f"{weights.name} in {weights.parent}" if weights is not None else None


def set_key(name: str) -> str:
    """The table a model set is written as: [model] for the default set, [models.NAME] for the others."""
    return "model" if name == DEFAULT_MODEL_SET else f"models.{name}"


# What the built-in sets want, for the message above.
_WANTS = {XL_MODEL_SET: "an SDXL .safetensors such as Illustrious-XL, NoobAI-XL, Animagine XL or Pony"}
