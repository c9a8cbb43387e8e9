"""Downloads as browsers make them, and bad files: what gets queued, skipped or failed, and why."""

from __future__ import annotations

import json
import os
import struct
import time
import zlib
from pathlib import Path

import nai_writer
from daemon_harness import DaemonRun, wait_for
from PIL import Image, PngImagePlugin

# Three different real NovelAI files: identical bytes would (rightly) be skipped as duplicates.
FIXTURES = {
    "chrome": "nai3_128_text_stealth_smea_vibe.png",
    "firefox": "nai1_furry_img2img_128_text_stealth.png",
    "safari": "nai3_128_thirdparty_rewritten.png",
}


def _write_slowly(path: Path, data: bytes, parts: int = 3) -> None:
    """A download in progress: the bytes arrive in pieces, with gaps (this is the download, not a wait)."""
    step = len(data) // parts + 1
    with open(path, "wb") as f:
        for i in range(0, len(data), step):
            f.write(data[i : i + step])
            f.flush()
            time.sleep(0.2)


def _done(daemon: DaemonRun, path: Path) -> bool:
    row = daemon.row(path)
    return row is not None and row["state"] == "done"


def test_browser_downloads_give_exactly_one_output_each_and_start_fast(daemon: DaemonRun, nai_fixtures: Path):
    data = {k: (nai_fixtures / v).read_bytes() for k, v in FIXTURES.items()}
    daemon.start()  # default watch settings: the latency below is the default user's latency
    w = daemon.watch

    # Chrome: "Unconfirmed N.crdownload" -> "x.png.crdownload" (written) -> rename to the final name.
    _write_slowly(w / "Unconfirmed 123.crdownload", data["chrome"])
    os.rename(w / "Unconfirmed 123.crdownload", w / "chrome.png.crdownload")
    renamed_at = time.time()
    os.rename(w / "chrome.png.crdownload", w / "chrome.png")
    wait_for(lambda: _done(daemon, w / "chrome.png"), 20, "the Chrome download to be processed")
    latency = daemon.row(w / "chrome.png")["started"] - renamed_at
    print(f"latency final rename -> job start: {latency:.2f} s")
    assert latency <= 2.5

    # Firefox: an empty placeholder under the final name, the data in .part, renamed over it.
    (w / "firefox.png").touch()
    _write_slowly(w / "firefox.png.part", data["firefox"])
    os.replace(w / "firefox.png.part", w / "firefox.png")

    # Safari: the data grows inside a x.png.download bundle, then moves out; the bundle goes.
    bundle = w / "safari.png.download"
    bundle.mkdir()
    _write_slowly(bundle / "safari.png", data["safari"])
    os.rename(bundle / "safari.png", w / "safari.png")
    bundle.rmdir()

    for name in ("firefox.png", "safari.png"):
        wait_for(lambda n=name: _done(daemon, w / n), 20, f"{name} to be processed")
    outputs = daemon.outputs()
    assert [p.name for p in outputs] == [f"{n}.naiup-upscale-2x.png" for n in ("chrome", "firefox", "safari")]
    for out, name in zip(outputs, ("chrome", "firefox", "safari"), strict=True):
        w0, h0 = Image.open(nai_fixtures / FIXTURES[name]).size  # a partial input would not decode whole
        assert Image.open(out).size == (w0 * 2, h0 * 2)
    paths = {r["path"] for r in daemon.rows()}
    assert not any(p.endswith((".part", ".crdownload", ".download")) or "Unconfirmed" in p for p in paths)
    assert all(r["attempts"] == 1 for r in daemon.rows() if r["state"] == "done")
    assert daemon.temps() == []

    # The same bytes downloaded again under another name: recorded as a duplicate, not redone.
    (w / "chrome (1).png").write_bytes(data["chrome"])
    dup = wait_for(
        lambda: (r := daemon.row(w / "chrome (1).png")) and r["state"] == "skipped" and r,
        20,
        "the duplicate download to be skipped",
    )
    assert "duplicate" in dup["error"] and len(daemon.outputs()) == 3


def _pixel_bomb(path: Path) -> None:
    """A valid PNG header claiming 60000x60000 pixels, with almost no data behind it."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def _gzip_bomb(path: Path) -> None:
    """A NovelAI-looking PNG whose zTXt chunk inflates to 20 MB."""
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", "NovelAI")
    info.add_text("Comment", "A" * 20_000_000, zip=True)
    Image.new("RGB", (16, 16)).save(path, pnginfo=info)


def test_bad_files_are_failed_or_skipped_with_a_reason_and_the_daemon_goes_on(
    daemon: DaemonRun, other_fixtures: Path
):
    daemon.write_config(watch="quiet_seconds = 0.3\ngive_up_seconds = 2.0")
    daemon.start()
    w = daemon.watch
    good = nai_writer.write_nai_png(daemon.root / "good.png", (32, 32)).read_bytes()
    (w / "truncated.png").write_bytes(good[: len(good) // 2])
    (w / "empty.png").touch()
    (w / "notes.png").write_text("this is not an image")
    _pixel_bomb(w / "bomb.png")
    _gzip_bomb(w / "gzbomb.png")
    (w / "plain.png").write_bytes((other_fixtures / "plain_no_genmeta_1x1.png").read_bytes())
    names = ("truncated", "empty", "notes", "bomb", "gzbomb", "plain")

    def decided() -> dict | None:
        rows = {Path(r["path"]).stem: r for r in daemon.rows()}
        ok = all(n in rows and rows[n]["state"] in ("failed", "skipped") for n in names)
        return rows if ok else None

    rows = wait_for(decided, 30, "every bad file to be failed or skipped")
    cli = daemon.cli("queue", "--failed", "--json")
    assert cli.returncode == 0, cli.stderr
    listed = {Path(i["path"]).stem: i for i in json.loads(cli.stdout)["items"]}
    expect = {
        "truncated": ("failed", "incomplete"),
        "empty": ("failed", "file is empty"),
        "notes": ("failed", "not an image"),
        "bomb": ("failed", "pixel bomb"),
        "gzbomb": ("failed", "gzip bomb"),
        "plain": ("skipped", "not a NovelAI image"),
    }
    for name, (state, reason) in expect.items():
        assert listed[name]["state"] == state, listed[name]
        assert reason in listed[name]["error"], listed[name]
    assert rows["bomb"]["attempts"] == 0  # refused before any model work
    human = daemon.cli("queue", "--failed")
    assert "pixel bomb" in human.stdout and "empty.png" in human.stdout

    (w / "after.png").write_bytes(good)  # the daemon is still working
    wait_for(lambda: _done(daemon, w / "after.png"), 20, "a good file after the bad ones")
    assert daemon.stop() == 0


def test_intake_failures_show_as_the_last_error_in_status(daemon: DaemonRun):
    daemon.write_config(watch="quiet_seconds = 0.2\ngive_up_seconds = 1.0")
    daemon.start()
    _pixel_bomb(daemon.watch / "bomb.png")  # refused at once by the stabiliser
    wait_for(lambda: "bomb.png" in (daemon.status()["last_error"] or ""), 20, "the refusal in status")
    assert "pixel bomb" in daemon.status()["last_error"]

    (daemon.watch / "empty.png").touch()  # given up on after give_up_seconds
    wait_for(lambda: "empty.png" in (daemon.status()["last_error"] or ""), 20, "the give-up in status")
    assert "file is empty" in daemon.status()["last_error"]
    assert daemon.stop() == 0
