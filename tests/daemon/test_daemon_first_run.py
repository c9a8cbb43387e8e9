"""First start of the real daemon on a folder that already holds NovelAI images: those are left alone
(recorded as existing), new arrivals are processed, and `naiup backfill` processes old ones on request."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import nai_writer
from daemon_harness import DaemonRun, wait_for

DAY = 86400.0


def _old_image(daemon: DaemonRun, name: str, seed: int, age: float = 90 * DAY) -> Path:
    """A NovelAI image downloaded long ago (its mtime says so; its ctime is now, as after a restore)."""
    path = nai_writer.write_nai_png(daemon.watch / name, (16, 16), seed=seed, pixel_seed=seed)
    then = time.time() - age
    os.utime(path, (then, then))
    return path


def _drop(daemon: DaemonRun, name: str, seed: int, age: float = 0.0) -> Path:
    """A finished download: written elsewhere (`age` ago, by its mtime), then renamed into the folder."""
    staging = daemon.root / "staging"
    staging.mkdir(exist_ok=True)
    tmp = nai_writer.write_nai_png(staging / name, (16, 16), seed=seed, pixel_seed=seed)
    if age:
        then = time.time() - age
        os.utime(tmp, (then, then))
    os.replace(tmp, daemon.watch / name)
    return daemon.watch / name


def _state(daemon: DaemonRun, path: Path) -> str | None:
    row = daemon.row(path)
    return row["state"] if row else None


def _done(daemon: DaemonRun, path: Path) -> bool:
    return _state(daemon, path) == "done"


def _outputs_of(daemon: DaemonRun, *sources: Path) -> list[Path]:
    stems = {p.stem for p in sources}
    return [o for o in daemon.outputs() if o.name.split(".naiup-")[0] in stems]


def test_first_start_leaves_old_images_alone_and_catches_up_after_a_stop(daemon: DaemonRun):
    daemon.write_config(watch="quiet_seconds = 0.2")
    old = [_old_image(daemon, f"old{i}.png", seed=i) for i in range(3)]
    daemon.start()
    wait_for(lambda: daemon.status()["existing"] == 3, 20, "the baseline to record the old images")
    assert [_state(daemon, p) for p in old] == ["existing"] * 3

    text = daemon.cli("status")
    assert text.returncode == 0 and "older images not processed: 3" in text.stdout
    assert json.loads(daemon.cli("status", "--json").stdout)["existing"] == 3

    new = _drop(daemon, "new.png", seed=100)
    wait_for(lambda: _done(daemon, new), 20, "the image dropped after start")
    assert [o.name for o in daemon.outputs()] == ["new.naiup-upscale-2x.png"]  # no old one was touched
    assert daemon.stop() == 0

    # Moved in while stopped, with a year-old mtime: the rename's status change says it arrived now.
    while_down = _drop(daemon, "while-down.png", seed=101, age=365 * DAY)
    daemon.start()
    wait_for(lambda: _done(daemon, while_down), 20, "the image that arrived while stopped")
    assert daemon.row(while_down)["attempts"] == 1 and len(_outputs_of(daemon, while_down)) == 1
    assert [_state(daemon, p) for p in old] == ["existing"] * 3 and len(daemon.outputs()) == 2
    assert daemon.status()["existing"] == 3
    assert daemon.stop() == 0


def test_backfill_since_queues_exactly_the_images_in_range_each_once(daemon: DaemonRun):
    daemon.write_config(watch="quiet_seconds = 0.2")
    ancient = [_old_image(daemon, f"ancient{i}.png", seed=i, age=400 * DAY) for i in range(2)]
    recent = [_old_image(daemon, f"recent{i}.png", seed=10 + i, age=2 * DAY) for i in range(2)]
    # The same bytes as recent0 under another name: a duplicate for the active preset and model.
    twin = daemon.watch / "recent0 (1).png"
    twin.write_bytes(recent[0].read_bytes())
    then = time.time() - 2 * DAY
    os.utime(twin, (then, then))
    daemon.start()
    wait_for(lambda: daemon.status()["existing"] == 5, 20, "the baseline")

    dry = daemon.cli("backfill", "--since", "7d", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith("3 older image(s) would be checked")
    assert sorted(Path(line.strip()).name for line in dry.stdout.splitlines()[1:]) == [
        "recent0 (1).png", "recent0.png", "recent1.png",
    ]  # fmt: skip
    assert daemon.status()["existing"] == 5 and daemon.outputs() == []  # a dry run changes nothing

    unwatched = daemon.cli("backfill", "--folder", str(daemon.root / "elsewhere"))
    assert unwatched.returncode == 1 and "not a watched folder" in unwatched.stderr
    parent = daemon.cli("backfill", "--dry-run", "--folder", str(daemon.watch.parent))
    assert parent.returncode == 1 and "not a watched folder or inside one" in parent.stderr

    week_ago = time.strftime("%Y-%m-%d", time.localtime(time.time() - 7 * DAY))
    queued = daemon.cli("backfill", "--since", week_ago)
    assert queued.returncode == 0 and queued.stdout.startswith("queued 3 older image(s)"), queued.stdout

    def settled() -> bool:
        states = [_state(daemon, p) for p in (*recent, twin)]
        return states.count("done") == 2 and states.count("skipped") == 1

    wait_for(settled, 30, "the backfilled images to be processed")
    assert len(_outputs_of(daemon, *recent)) == 2 and len(daemon.outputs()) == 2
    assert all(r["attempts"] == 1 for r in daemon.rows() if r["state"] == "done")
    (dup,) = [r for r in daemon.rows() if r["state"] == "skipped" and "recent0" in r["path"]]
    assert "duplicate" in dup["error"]
    assert [_state(daemon, p) for p in ancient] == ["existing"] * 2
    assert daemon.status()["existing"] == 2

    again = daemon.cli("backfill", "--since", "7d")
    assert again.returncode == 0 and again.stdout.startswith("queued 0 older image(s)")
    assert daemon.stop() == 0


def test_process_existing_processes_the_old_images(daemon: DaemonRun):
    daemon.write_config(watch="quiet_seconds = 0.2\nprocess_existing = true")
    old = [_old_image(daemon, f"old{i}.png", seed=i) for i in range(2)]
    daemon.start()
    wait_for(lambda: all(_done(daemon, p) for p in old), 20, "the old images to be processed")
    assert len(daemon.outputs()) == 2 and daemon.status()["existing"] == 0
    assert daemon.stop() == 0


def _own_output(daemon: DaemonRun, name: str) -> Path:
    """An output naiup wrote in an earlier life of this folder (its provenance chunk says so)."""
    from PIL import Image, PngImagePlugin

    from naiup.output.provenance import PROVENANCE_KEY

    info = PngImagePlugin.PngInfo()
    info.add_text(PROVENANCE_KEY, "{}")
    path = daemon.watch / name
    Image.new("RGB", (32, 32)).save(path, pnginfo=info)
    then = time.time() - 90 * DAY
    os.utime(path, (then, then))
    return path


def _old_photo(daemon: DaemonRun, name: str) -> Path:
    """An image with no generation metadata, downloaded long ago."""
    from PIL import Image

    path = daemon.watch / name
    Image.new("RGB", (32, 32), "blue").save(path)
    then = time.time() - 90 * DAY
    os.utime(path, (then, then))
    return path


def test_the_older_images_count_is_what_backfill_would_queue(daemon: DaemonRun):
    daemon.write_config(watch="quiet_seconds = 0.2")
    old = [_old_image(daemon, f"old{i}.png", seed=i) for i in range(2)]
    own = _own_output(daemon, "old0.naiup-upscale-2x.png")
    photo = _old_photo(daemon, "photo.png")
    daemon.start()
    wait_for(lambda: _state(daemon, old[0]) == "existing", 20, "the baseline")
    # Our own output is none of the user's older images: recorded as one, never offered.
    assert _state(daemon, own) == "skipped" and daemon.row(own)["error"] == "a naiup output"
    # A photo is an older image, but with only_novelai (the default) a backfill would skip it: once
    # the sorter has read it, neither the count nor the backfill has it.
    assert _state(daemon, photo) == "existing"
    wait_for(lambda: daemon.status()["existing"] == 2, 20, "the photo to be left out of the count")
    assert daemon.cli("backfill", "--dry-run").stdout.startswith("2 older image(s) would be checked")

    # The folder is no longer watched: its rows are nothing backfill would take, nor does status count them.
    elsewhere = daemon.root / "elsewhere"
    elsewhere.mkdir()
    daemon.config_path.write_text(
        daemon.config_path.read_text().replace(daemon.watch.as_posix(), elsewhere.as_posix())
    )
    wait_for(lambda: daemon.status()["existing"] == 0, 20, "the count to drop with the folder")
    assert daemon.cli("backfill", "--dry-run").stdout.startswith("0 older image(s)")
    assert daemon.stop() == 0
