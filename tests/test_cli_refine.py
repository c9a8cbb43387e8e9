"""`naiup refine` end to end: a real process on a real NovelAI file."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from PIL import Image

from naiup.cli.main import main
from naiup.cli.progress_bar import ProgressBar

REPO = Path(__file__).resolve().parents[1]


def _env(tmp_path: Path) -> dict[str, str]:
    # Own config/state folders: never read the developer's real config.
    env = dict(os.environ, NAIUP_CONFIG_DIR=str(tmp_path / "cfg"), NAIUP_STATE_DIR=str(tmp_path / "state"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def _refine(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "naiup", "refine", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(tmp_path), timeout=300)


def test_refine_writes_one_output_beside_a_real_nai_file_and_never_overwrites(tmp_path, nai_fixtures):
    work = tmp_path / "downloads"
    work.mkdir()
    src = work / "nai.png"
    shutil.copy(nai_fixtures / "nai3_128_text_stealth_smea_vibe.png", src)
    corrupt = work / "corrupt.png"
    corrupt.write_bytes(src.read_bytes()[:3000])
    original = src.read_bytes()

    first = _refine(tmp_path, str(src), str(corrupt), "--preset", "upscale-2x")
    assert first.returncode == 1, first.stderr
    out = work / "nai.naiup-upscale-2x.png"
    assert first.stdout.strip() == str(out)
    assert f"error: {corrupt}: " in first.stderr and "Traceback" not in first.stderr
    assert sorted(p.name for p in work.iterdir()) == ["corrupt.png", "nai.naiup-upscale-2x.png", "nai.png"]
    assert src.read_bytes() == original
    with Image.open(out) as o, Image.open(src) as i:
        assert o.size == (256, 256) and o.text["Comment"] == i.text["Comment"] and "naiup" in o.text
    out_bytes = out.read_bytes()

    second = _refine(tmp_path, str(src), "--preset", "upscale-2x")
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == str(work / "nai.naiup-upscale-2x (2).png")
    assert out.read_bytes() == out_bytes and src.read_bytes() == original


def test_unknown_preset_is_exit_1_with_the_known_names(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NAIUP_CONFIG_DIR", str(tmp_path))
    assert main(["refine", str(tmp_path / "x.png"), "--preset", "nope"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nope" in err and "upscale-2x" in err


def test_missing_file_is_exit_1_naming_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NAIUP_CONFIG_DIR", str(tmp_path))
    gone = tmp_path / "gone.png"
    assert main(["refine", str(gone), "--preset", "upscale-2x"]) == 1
    assert capsys.readouterr().err.strip() == f"error: {gone}: no such file"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX-only")
def test_fifo_is_refused_without_reading_and_the_next_file_still_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NAIUP_CONFIG_DIR", str(tmp_path))
    pipe, gone = tmp_path / "b.png", tmp_path / "gone.png"
    os.mkfifo(pipe)
    # Should the FIFO be opened after all, a late writer unblocks it: the test then fails, never hangs.
    rescue = threading.Timer(10, lambda: pipe.open("wb").close())
    rescue.daemon = True
    rescue.start()
    try:
        assert main(["refine", str(pipe), str(gone), "--preset", "upscale-2x"]) == 1
    finally:
        rescue.cancel()
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {pipe}: not a regular file",
        f"error: {gone}: no such file",
    ]


def test_refine_without_files_is_a_usage_error():
    with pytest.raises(SystemExit) as exc:
        main(["refine"])
    assert exc.value.code == 2


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_draws_only_on_a_terminal():
    tty, pipe = _Tty(), io.StringIO()
    for stream in (tty, pipe):
        bar = ProgressBar(stream, "a.png", min_interval=0.0)
        bar(0.5, "upscale")
        bar(1.0, "done")
        bar.close()
    assert "a.png [" in tty.getvalue() and " 50% upscale" in tty.getvalue() and "100% done" in tty.getvalue()
    assert pipe.getvalue() == ""


def test_an_error_on_one_file_is_one_line_and_the_next_file_still_runs(tmp_path, monkeypatch, capsys):
    import errno

    import naiup.job
    from naiup.job import JobResult

    monkeypatch.setenv("NAIUP_CONFIG_DIR", str(tmp_path))
    first, second = tmp_path / "first.png", tmp_path / "second.png"

    def run_job(src, preset, engine, config, progress=None):  # an OS error that no NaiupError wraps
        if src == first:
            raise OSError(errno.ENAMETOOLONG, "File name too long", str(src))
        return JobResult(src=src, output=src.with_name("second.out.png"), seed=None, model_id="m")

    monkeypatch.setattr(naiup.job, "run_job", run_job)
    assert main(["refine", str(first), str(second), "--preset", "upscale-2x"]) == 1
    out, err = capsys.readouterr()
    assert err == f"error: {first}: File name too long\n"
    assert out == f"{tmp_path / 'second.out.png'}\n"


def test_a_long_non_utf8_name_is_refined_by_the_real_command(tmp_path):
    # 250 bytes of name: its output name needs shortening, and an undecodable byte stays as it is.
    import nai_writer

    work = tmp_path / "downloads"
    work.mkdir()
    src = Path(os.fsdecode(bytes(work) + b"/" + b"\xfe" + b"n" * 245 + b".png"))
    nai_writer.write_nai_png(src, (16, 16))
    cmd = [sys.executable, "-m", "naiup", "refine", src, "--preset", "upscale-2x"]
    done = subprocess.run(cmd, capture_output=True, env=_env(tmp_path), timeout=300)
    assert done.returncode == 0, done.stderr
    outputs = [p for p in work.iterdir() if p != src]
    assert done.stdout == bytes(outputs[0]) + b"\n"  # the name as the file system has it, for scripts
    assert len(outputs) == 1 and len(os.fsencode(outputs[0].name)) == 255
    assert os.fsencode(outputs[0].name).startswith(b"\xfennn")
    assert outputs[0].name.endswith("n.naiup-upscale-2x.png")


@pytest.mark.parametrize(("setting", "expected"), [("auto", "off"), ("on", "on"), ("off", "off")])
def test_refine_compiles_no_unet_graphs_unless_the_config_forces_it(tmp_path, monkeypatch, setting, expected):
    # A one-shot command would pay a minute of compiling for a few seconds' gain: auto means off here.
    import naiup.engine
    import naiup.job
    from naiup.job import JobResult

    (tmp_path / "config.toml").write_text(f'[model]\nunet_graphs = "{setting}"\n')
    monkeypatch.setenv("NAIUP_CONFIG_DIR", str(tmp_path))
    seen = []
    monkeypatch.setattr(naiup.engine, "Engine", lambda model, **_: seen.append(model.unet_graphs))
    done = lambda src, *a, **k: JobResult(src=src, output=src, seed=None, model_id="m")  # noqa: E731
    monkeypatch.setattr(naiup.job, "run_job", done)
    assert main(["refine", str(tmp_path / "a.png"), "--preset", "upscale-2x"]) == 0
    assert seen == [expected]


def test_a_controlnet_preset_without_a_controlnet_is_refused_before_any_model_loads(
    tmp_path, monkeypatch, capsys
):
    import naiup.engine

    monkeypatch.setenv("NAIUP_CONFIG_DIR", str(tmp_path))
    loaded = []
    monkeypatch.setattr(naiup.engine, "Engine", lambda model, **_: loaded.append(model))
    assert main(["refine", str(tmp_path / "a.png"), "--preset", "refine-2x-strong"]) == 1
    err = capsys.readouterr().err
    assert "model.controlnet" in err and "refine-2x-strong" in err and loaded == []
