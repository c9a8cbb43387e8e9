"""What a new user meets first in the CLI's config handling: a mistyped --config, a file with several
typos, an unknown --preset. In-process (cli.main), each with its exit status and exact stderr."""

from __future__ import annotations

from pathlib import Path

import pytest

from naiup.cli.main import main
from naiup.config import BUILTIN_PRESETS


@pytest.fixture(autouse=True)
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The per-user config folder, empty: no real user's config is read."""
    folder = tmp_path / "cfg"
    monkeypatch.setenv("NAIUP_CONFIG_DIR", str(folder))
    return folder


@pytest.mark.parametrize("action", ["check", "show"])
def test_config_check_and_show_refuse_a_missing_config_file_named_with_config(action, tmp_path, capsys):
    # `config check --config mnie.toml` (a typo) used to say "using built-in defaults" and "ok", exit 0,
    # while `naiup --config mnie.toml run` refused the same file.
    missing = tmp_path / "mnie.toml"
    assert main(["config", action, "--config", str(missing)]) == 1
    out, err = capsys.readouterr()
    assert err.strip() == (
        f"error: --config {missing}: does not exist (`naiup config path` shows the default config file)"
    )
    assert out == ""
    assert main(["--config", str(tmp_path), "config", action]) == 1
    assert "is a folder, not a file" in capsys.readouterr().err


def test_without_config_a_missing_default_file_still_means_built_in_defaults(config_dir, capsys):
    assert main(["config", "show"]) == 0
    assert f"note: no config file at {config_dir / 'config.toml'}; using built-in defaults" in (
        capsys.readouterr().err
    )


def test_config_path_prints_where_it_would_read_from_as_an_absolute_path(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["--config", "mnie.toml", "config", "path"]) == 0  # may not exist: it only says where
    assert capsys.readouterr().out.strip() == str(tmp_path / "mnie.toml")


def test_every_problem_of_a_config_file_is_reported_at_once(tmp_path, capsys):
    # Three typos in three tables used to take three runs of `config check`, one message each.
    cfg = tmp_path / "typos.toml"
    cfg.write_text(
        "[wach]\nrecursive = true\n"
        '[presets.mine]\noverlp = 16\nupscaler = "realcugan2x"\n'
        "[daemon]\nmax_attempts = 0\n",
        encoding="utf-8",
    )
    assert main(["config", "check", "--config", str(cfg)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"error: {cfg}: [wach] is not a known key; did you mean 'watch'?",
        f"error: {cfg}: [daemon.max_attempts] must be between 1 and 100, got 0",
        f"error: {cfg}: [presets.mine.overlp] is not a known key; did you mean 'overlap'?",
        f"error: {cfg}: [presets.mine.upscaler] 'realcugan2x' is not a built-in upscaler; did you mean "
        "'realcugan-2x'? (built-in: realcugan-2x, realesrgan-x4-anime, realesr-animevideov3-x4, lanczos; "
        "a model file is given by its path, e.g. ~/models/4x-model.safetensors)",
    ]


def test_an_unknown_upscaler_name_fails_config_check(tmp_path, capsys):
    cfg = tmp_path / "config.toml"
    cfg.write_text('[presets.p]\nupscaler = "nope"\n', encoding="utf-8")
    assert main(["config", "check", "--config", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {cfg}: [presets.p.upscaler] 'nope' is not a built-in upscaler (built-in:")


@pytest.mark.parametrize("command", ["info", "refine"])
def test_an_unknown_preset_option_is_blamed_on_the_option_not_the_config_file(
    command, config_dir, tmp_path, capsys
):
    # `info --preset nope` used to say "<config path>: [presets] unknown preset 'nope'".
    config_dir.mkdir()
    (config_dir / "config.toml").write_text("[presets.mine]\nsteps = 20\n", encoding="utf-8")
    assert main([command, str(tmp_path / "x.png"), "--preset", "nope"]) == 1
    known = ", ".join(sorted([*BUILTIN_PRESETS, "mine"]))
    assert capsys.readouterr().err.strip() == f"error: --preset 'nope': unknown preset (known: {known})"
