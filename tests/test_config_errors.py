"""Every refusal names the file, the key path and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from naiup.config import BUILTIN_PRESETS, Config, ModelConfig, Preset, load_config
from naiup.config.schema import check_values
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
    ("[presets.refine-2x]\nsteps = 0", "presets.refine-2x.steps", "between 1 and 1000"),
    ("[presets.refine-4x]\ndenoise = 0", "presets.refine-4x.denoise", "must be in (0, 1]"),
    ("[presets.refine-4x]\ndenoise = 1.5", "presets.refine-4x.denoise", "must be in (0, 1]"),
    ("[presets.x]\nsteps = 4\ndenoise = 0.2", "presets.x.steps", "gives no UNet step"),
    ("[presets.x]\ncfg = 2.0", "presets.x.cfg", "LCM burns above CFG 2"),
    ('[presets.x]\ncfg = 0.5\nsampler = "euler"', "presets.x.cfg", "must be at least 1"),
    ('[presets.x]\nsampler = "ddim"', "presets.x.sampler", "must be one of lcm, dmd2, euler"),
    ("[presets.x]\ntile_size = 32\noverlap = 32", "presets.x.overlap", "smaller than tile_size (32)"),
    ("[presets.x]\ntile_size = 60", "presets.x.tile_size", "multiple of 8"),
    ("[presets.x]\ntile_size = 0\noverlap = 0", "presets.x.tile_size", "multiple of 8, >= 8"),
    ("[presets.x]\noverlap = -1", "presets.x.overlap", "must not be negative"),
    ("[presets.x]\ntile_batch_size = 0", "presets.x.tile_batch_size", "between 1 and 256"),
    ('[presets.x]\nregions = "on"', "presets.x.regions", "must be one of auto, off"),
    ("[presets.x]\nregions = false", "presets.x.regions", "must be a string, got a boolean"),
    ("[presets.x]\nregion_size = 0", "presets.x.region_size", "must be in (0, 1]"),
    ("[presets.x]\nregion_size = 1.5", "presets.x.region_size", "must be in (0, 1]"),
    ('[presets.x]\nbackground_drop_tags = "1girl"', "presets.x.background_drop_tags", "must be an array"),
    ('[presets.x]\nbackground_drop_tags = ["1girl, solo"]', "presets.x.background_drop_tags", "one tag"),
    ('[presets.x]\nbackground_drop_tags = [" "]', "presets.x.background_drop_tags", "not empty"),
    ("[presets.x]\nbackground_drop_tags = [1]", "presets.x.background_drop_tags[0]", "must be a string"),
    ('[presets.x]\ntile_method = "box"', "presets.x.tile_method", "one of mixture, multidiffusion"),
    ('[presets.x]\nvae_tiling = "fast"', "presets.x.vae_tiling", "one of auto, exact, low-memory, off"),
    ("[presets.x]\nvae_attention_window = 8", "presets.x.vae_attention_window", "at least 16 latent px"),
    ('[presets.x]\nupscaler = " "', "presets.x.upscaler", "must not be empty"),
    ("[presets.x]\nscale = 1", "presets.x.scale", "must be in (1, 8]"),
    ("[presets.x]\nscale = 9.0", "presets.x.scale", "must be in (1, 8]"),
    ('[presets.x]\nseed = "1234"', "presets.x.seed", "an integer (without quotes)"),
    ("[presets.x]\nseed = -1", "presets.x.seed", "between 0 and 4294967295"),
    ('[presets.x]\nname = "y"', "presets.x.name", "not a known key"),
    ('[presets.x]\nupscaler = "./nope.pth"', "presets.x.upscaler", "file not found"),
    ('[presets.x]\nupscaler = "nope"', "presets.x.upscaler", "'nope' is not a built-in upscaler (built-in:"),
    ('[presets.x]\nupscaler = "realesrgan-4x-anime"', "presets.x.upscaler", "mean 'realesrgan-x4-anime'?"),
    ('[presets."bad name"]\nsteps = 10', "presets.bad name", "letters, digits"),
    ('[daemon]\nactive_preset = "nope"', "daemon.active_preset", "names no preset: 'nope'"),
    ("[daemon]\nmax_attempts = 0", "daemon.max_attempts", "between 1 and 100"),
    ('[output]\nname = "{stem}.jpg"', "output.name", "must end in .png"),
    ('[output]\nname = "{name}.png"', "output.name", "unknown field {name}"),
    ('[output]\nname = "out.png"', "output.name", "must contain {stem}"),
    ('[output]\nname = "sub/{stem}.png"', "output.name", "not a path"),
    ('[output]\nname = "{stem.png"', "output.name", "not a valid template"),
    ("[output]\npng_compress_level = 10", "output.png_compress_level", "between 0 and 9"),
    ("[output]\nmax_output_megapixels = 0", "output.max_output_megapixels", "greater than 0"),
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
    ('[model]\nprediction = "x0"', "model.prediction", "one of auto, epsilon, v"),
    ('[model]\nunet_graphs = "yes"', "model.unet_graphs", "one of auto, on, off"),
    ("[model]\nmax_vram_gb = -1", "model.max_vram_gb", "0 (no limit) or at least 1 (GiB)"),
    ("[model]\nmax_vram_gb = 0.5", "model.max_vram_gb", "0 (no limit) or at least 1 (GiB)"),
    ('[model]\ncheckpoint = " "', "model.checkpoint", "must not be empty"),
    ("[daemon]\njob_timeout_seconds = 0", "daemon.job_timeout_seconds", "greater than 0"),
    ("[daemon]\nstop_grace_seconds = -1", "daemon.stop_grace_seconds", "greater than 0"),
    ("watch = 3", "watch", "must be a table"),
    ('[watch]\nfolders = "~/Downloads"', "watch.folders", "must be an array, got a string"),
    ("[watch]\nfolders = []", "watch.folders", "at least one folder"),
    ("[watch]\nfolders = [3]", "watch.folders[0]", "must be a non-empty path string"),
    ("[watch]\nquiet_seconds = nan", "watch.quiet_seconds", "finite"),
    ("[watch]\nquiet_seconds = 0", "watch.quiet_seconds", "greater than 0"),
    ("[watch]\nrescan_seconds = 0", "watch.rescan_seconds", "greater than 0"),
    ("[watch]\ngive_up_seconds = -5", "watch.give_up_seconds", "greater than 0"),
    ("[watch]\ngive_up_seconds = 0.5", "watch.give_up_seconds", "longer than watch.quiet_seconds"),
    ("[pause]\ngpu_busy_percent = 101", "pause.gpu_busy_percent", "between 0 and 100"),
    ("[pause]\nprocesses = [1]", "pause.processes[0]", "must be a string"),
    ("[pause]\ncheck_seconds = 0", "pause.check_seconds", "greater than 0"),
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


# The engine used as a library checks the Preset and ModelConfig it is handed with check_values: the
# same rules as load_config, so the same refusal, only without a file to name.
BUILT_IN_CODE = [
    ("[presets.x]\ntile_size = 32\noverlap = 32", Preset(name="x", tile_size=32, overlap=32)),
    ("[presets.x]\nsteps = 4\ndenoise = 0.2", Preset(name="x", steps=4, denoise=0.2)),
    ('[presets.x]\nsampler = "ddim"', Preset(name="x", sampler="ddim")),
    ("[presets.x]\nseed = -1", Preset(name="x", seed=-1)),
    ('[presets.x]\nseed = "1234"', Preset(name="x", seed="1234")),
    ("[presets.x]\ncfg = 2.5", Preset(name="x", cfg=2.5)),
    ('[presets.x]\nupscaler = "nope"', Preset(name="x", upscaler="nope")),
    ('[model]\ndevice = "gpu"', ModelConfig(device="gpu")),
    ("[model]\nmax_vram_gb = 0.5", ModelConfig(max_vram_gb=0.5)),
]


@pytest.mark.parametrize(("text", "built"), BUILT_IN_CODE, ids=[c[0] for c in BUILT_IN_CODE])
def test_a_value_built_in_code_is_refused_as_at_load(tmp_path: Path, text: str, built):
    path = tmp_path / "config.toml"
    path.write_text(text + "\n", encoding="utf-8")
    with pytest.raises(ConfigError) as at_load:
        load_config(path)
    key = at_load.value.key.rsplit(".", 1)[0]
    with pytest.raises(ConfigError) as in_code:
        check_values(built, key)
    assert (in_code.value.key, in_code.value.reason) == (at_load.value.key, at_load.value.reason)
    assert str(in_code.value) == f"[{at_load.value.key}] {at_load.value.reason}"


def test_a_wrong_type_built_in_code_is_refused_not_a_type_error():
    with pytest.raises(ConfigError, match=r"\[presets.x.denoise\] must be float, got a string \('0.5'\)"):
        check_values(Preset(name="x", denoise="0.5"), "presets.x")  # type: ignore[arg-type]


def test_the_defaults_pass_the_rules():
    for name, preset in BUILTIN_PRESETS.items():
        check_values(preset, f"presets.{name}")
    for section in ("watch", "output", "model", "daemon", "pause"):
        check_values(getattr(Config(), section), section)


@pytest.mark.parametrize(
    "name", ["realcugan-2x", "realesrgan-x4-anime", "realesr-animevideov3-x4", "Lanczos"]
)
def test_built_in_upscaler_names_are_accepted(tmp_path: Path, name: str):
    path = tmp_path / "config.toml"
    path.write_text(f'[presets.x]\nupscaler = "{name}"\n', encoding="utf-8")
    assert load_config(path).presets["x"].upscaler == name


def test_all_problems_of_a_file_come_in_one_error_led_by_the_first(tmp_path: Path):
    path = tmp_path / "config.toml"
    path.write_text(
        "[watch]\nrecursiv = true\nquiet_seconds = 0\n"
        "[output]\npng_compress_level = 10\n"
        '[presets.x]\nsteps = 0\nsampler = "ddim"\n'
        "[presets.y]\ntile_size = 32\noverlap = 32\ncfg = 3.0\n"  # two rules across its keys
        '[models.sd]\ncheckpoint = "gone.safetensors"\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    exc = info.value
    keys = [p.key for p in exc.problems]
    assert keys == [
        "watch.recursiv",
        "watch.quiet_seconds",
        "output.png_compress_level",
        "presets.x.steps",
        "presets.x.sampler",
        "presets.y.overlap",
        "presets.y.cfg",
        "models.sd.checkpoint",
    ]
    assert str(exc).splitlines() == [str(p) for p in exc.problems]
    assert all(line.startswith(f"{path}: [") for line in str(exc).splitlines())
    # Callers that read one problem get the first, as before.
    assert (exc.key, exc.reason, exc.path) == ("watch.recursiv", exc.problems[0].reason, path)


def test_rules_across_tables_wait_for_the_values_they_judge(tmp_path: Path):
    # quiet_seconds refused: "give_up_seconds must be longer than quiet_seconds" would only echo it.
    path = tmp_path / "config.toml"
    path.write_text("[watch]\nquiet_seconds = -1\ngive_up_seconds = 0.5\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert [p.key for p in info.value.problems] == ["watch.quiet_seconds"]
    # Once each value passes, the rules across tables report every one broken, together.
    path.write_text(
        '[watch]\ngive_up_seconds = 0.5\n[daemon]\nactive_preset = "nope"\n[presets.z]\nmodel = "other"\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert [p.key for p in info.value.problems] == [
        "watch.give_up_seconds",
        "presets.z.model",
        "daemon.active_preset",
    ]


@pytest.mark.parametrize(
    ("text", "keys"),
    [
        # A refused value elsewhere does not hold back the rules across tables that can be judged.
        (
            '[daemon]\nactive_preset = "zzz"\n[presets.p]\ndenoise = 2\n',
            ["presets.p.denoise", "daemon.active_preset"],
        ),
        # An unknown key of a preset does not hide the rules on its other keys, nor other presets'.
        (
            "[presets.p]\nsteps = 5\ncfg = 3\nbogus = 1\n[presets.q]\ncfg = 3\n",
            ["presets.p.bogus", "presets.p.cfg", "presets.q.cfg"],
        ),
        # No echoes: a preset or set that failed is not also "named by nothing", and a rule across
        # keys does not judge the default that stands in for a refused value.
        ('[daemon]\nactive_preset = "p"\n[presets.p]\nbogus = 1\n', ["presets.p.bogus"]),
        (
            '[models.sd]\ncheckpoint = "gone.safetensors"\n[presets.z]\nmodel = "sd"\n',
            ["models.sd.checkpoint"],
        ),
        ("[presets.p]\ntile_size = 60\noverlap = 4000\n", ["presets.p.tile_size"]),
        (
            "[watch]\nquiet_seconds = -1\ngive_up_seconds = 0.5\nbogus = 1\n",
            ["watch.bogus", "watch.quiet_seconds"],
        ),
    ],
)
def test_rules_across_keys_and_tables_run_beside_other_problems(tmp_path: Path, text: str, keys: list[str]):
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert [p.key for p in info.value.problems] == keys


def test_one_problem_is_a_plain_config_error():
    one = ConfigError("a", "is wrong", "f.toml")
    assert ConfigError.of([one]) is one and one.problems == (one,)
