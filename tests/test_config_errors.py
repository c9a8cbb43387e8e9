"""Every refusal names the file, the key path and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from naiup.config import load_config
from naiup.errors import ConfigError

CASES = [
    # (TOML text, key named in the message, reason fragment)
    ("[presets.refine-2x]\noverlp = 16", "presets.refine-2x.overlp", "did you mean 'overlap'?"),
    ("[wach]\nrecursive = true", "wach", "did you mean 'watch'?"),
    ("[watch]\nrecursiv = true", "watch.recursiv", "did you mean 'recursive'?"),
    ("[watch]\nrecursive = 1", "watch.recursive", "must be true or false, got an integer"),
    ('[daemon]\nnotifications = "yes"', "daemon.notifications", "must be true or false"),
    ("[presets.refine-2x]\nsteps = 10.5", "presets.refine-2x.steps", "must be an integer, got a float"),
    ("[presets.refine-2x]\nsteps = true", "presets.refine-2x.steps", "must be an integer, got a boolean"),
    ("[presets.x]\nprompt = 3", "presets.x.prompt", "must be a string"),
    ("[presets.refine-4x]\ndenoise = 0", "presets.refine-4x.denoise", "must be in (0, 1]"),
    ("[presets.refine-4x]\ndenoise = 1.5", "presets.refine-4x.denoise", "must be in (0, 1]"),
    ("[presets.x]\nsteps = 4\ndenoise = 0.2", "presets.x.steps", "gives no UNet step"),
    ("[presets.x]\ncfg = 2.0", "presets.x.cfg", "LCM burns above CFG 2"),
    ('[presets.x]\ncfg = 0.5\nsampler = "euler"', "presets.x.cfg", "must be at least 1"),
    ('[presets.x]\nsampler = "ddim"', "presets.x.sampler", "must be one of lcm, dmd2, euler"),
    ("[presets.x]\ntile_size = 32\noverlap = 32", "presets.x.overlap", "smaller than tile_size (32)"),
    ("[presets.x]\ntile_size = 60", "presets.x.tile_size", "multiple of 8"),
    ("[presets.x]\ntile_size = 0\noverlap = 0", "presets.x.tile_size", "multiple of 8, >= 8"),
    ("[presets.x]\ntile_batch_size = 0", "presets.x.tile_batch_size", "between 1 and 256"),
    ('[presets.x]\nregions = "on"', "presets.x.regions", "must be one of auto, off"),
    ("[presets.x]\nregions = false", "presets.x.regions", "must be a string, got a boolean"),
    ("[presets.x]\nregion_size = 0", "presets.x.region_size", "must be in (0, 1]"),
    ("[presets.x]\nregion_size = 1.5", "presets.x.region_size", "must be in (0, 1]"),
    ('[presets.x]\nbackground_drop_tags = "1girl"', "presets.x.background_drop_tags", "must be an array"),
    ('[presets.x]\nbackground_drop_tags = ["1girl, solo"]', "presets.x.background_drop_tags", "one tag"),
    ('[presets.x]\nbackground_drop_tags = [" "]', "presets.x.background_drop_tags", "not empty"),
    ("[presets.x]\nbackground_drop_tags = [1]", "presets.x.background_drop_tags[0]", "must be a string"),
    ("[presets.x]\nscale = 1", "presets.x.scale", "must be in (1, 8]"),
    ("[presets.x]\nscale = 9.0", "presets.x.scale", "must be in (1, 8]"),
    ('[presets.x]\nseed = "1234"', "presets.x.seed", "an integer (without quotes)"),
    ("[presets.x]\nseed = -1", "presets.x.seed", "between 0 and 4294967295"),
    ('[presets.x]\nname = "y"', "presets.x.name", "not a known key"),
    ('[presets.x]\nupscaler = "./nope.pth"', "presets.x.upscaler", "file not found"),
    ('[presets."bad name"]\nsteps = 10', "presets.bad name", "letters, digits"),
    ('[daemon]\nactive_preset = "nope"', "daemon.active_preset", "names no preset: 'nope'"),
    ("[daemon]\nmax_attempts = 0", "daemon.max_attempts", "between 1 and 100"),
    ('[output]\nname = "{stem}.jpg"', "output.name", "must end in .png"),
    ('[output]\nname = "{name}.png"', "output.name", "unknown field {name}"),
    ('[output]\nname = "out.png"', "output.name", "must contain {stem}"),
    ('[output]\nname = "sub/{stem}.png"', "output.name", "not a path"),
    ('[output]\nname = "{stem.png"', "output.name", "not a valid template"),
    ("[output]\npng_compress_level = 10", "output.png_compress_level", "between 0 and 9"),
    ('[model]\nvae = "missing.safetensors"', "model.vae", "file not found"),
    ('[model]\ncheckpoint = "mymodel.safetensors"', "model.checkpoint", "neither an existing"),
    ('[model]\ncheckpoint = "just-a-name"', "model.checkpoint", "hub id like 'owner/name'"),
    ('[model]\nlcm_lora = "~/nope/lcm.safetensors"', "model.lcm_lora", "neither an existing file"),
    ('[model]\nlora_dirs = ["nope"]', "model.lora_dirs[0]", "folder not found"),
    ('[model]\nloras = [{ path = "x.safetensors" }]', "model.loras[0].path", "file not found"),
    ("[model]\nloras = [{ weight = 1.0 }]", "model.loras[0].path", "is required"),
    ('[model]\nloras = ["x.safetensors"]', "model.loras[0]", "must be a table"),
    ('[model]\ndevice = "gpu"', "model.device", "must be one of auto, cuda, mps, cpu"),
    ("[model]\nclip_skip = 0", "model.clip_skip", "between 1 and 12"),
    ("watch = 3", "watch", "must be a table"),
    ('[watch]\nfolders = "~/Downloads"', "watch.folders", "must be an array, got a string"),
    ("[watch]\nfolders = []", "watch.folders", "at least one folder"),
    ("[watch]\nfolders = [3]", "watch.folders[0]", "must be a non-empty path string"),
    ("[watch]\nquiet_seconds = nan", "watch.quiet_seconds", "finite"),
    ("[watch]\ngive_up_seconds = 0.5", "watch.give_up_seconds", "longer than watch.quiet_seconds"),
    ("[pause]\ngpu_busy_percent = 101", "pause.gpu_busy_percent", "between 0 and 100"),
    ("[pause]\nprocesses = [1]", "pause.processes[0]", "must be a string"),
    ("[watch\nrecursive = true", "toml", "is not valid TOML"),
]


@pytest.mark.parametrize(("text", "key", "reason"), CASES, ids=[c[1] + ":" + c[2][:20] for c in CASES])
def test_refusal_names_file_key_and_reason(tmp_path: Path, text: str, key: str, reason: str):
    path = tmp_path / "config.toml"
    path.write_text(text + "\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert info.value.key == key
    assert message.startswith(f"{path}: [{key}] ")
    assert reason in message


def test_unreadable_bytes_are_refused_with_the_file_named(tmp_path: Path):
    path = tmp_path / "config.toml"
    path.write_bytes(b"[watch]\nrecursive = \xff\n")
    with pytest.raises(ConfigError, match=r"config\.toml: \[file\] cannot be read: .utf-8. codec"):
        load_config(path)
