"""Atomic, no-clobber publishing (naiup/atomic.py)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from naiup.atomic import is_temp_name, write_first_free, write_new
from naiup.errors import OutputError


def _leftovers(folder):
    return [p.name for p in folder.iterdir() if is_temp_name(p)]


def test_write_new_creates_the_file_whole_and_leaves_no_temp(tmp_path):
    out = write_new(tmp_path / "a.png", b"data")
    assert out.read_bytes() == b"data" and _leftovers(tmp_path) == []


def test_existing_file_is_never_overwritten(tmp_path):
    (tmp_path / "a.png").write_bytes(b"user's file")
    with pytest.raises(FileExistsError):
        write_new(tmp_path / "a.png", b"ours")
    assert (tmp_path / "a.png").read_bytes() == b"user's file" and _leftovers(tmp_path) == []


def test_first_free_candidate_is_used(tmp_path):
    (tmp_path / "a.png").write_bytes(b"x")
    (tmp_path / "a (2).png").write_bytes(b"y")
    names = [tmp_path / "a.png", tmp_path / "a (2).png", tmp_path / "a (3).png"]
    assert write_first_free(names, b"z") == tmp_path / "a (3).png"
    assert (tmp_path / "a.png").read_bytes() == b"x" and (tmp_path / "a (2).png").read_bytes() == b"y"


def test_candidates_are_drawn_only_until_one_is_free(tmp_path):
    # run_job offers ~10,000 fallback names; building them all cost ~30 ms per job.
    (tmp_path / "a.png").write_bytes(b"x")
    drawn = []

    def names():
        for n in range(1, 10_000):
            drawn.append(n)
            yield tmp_path / ("a.png" if n == 1 else f"a ({n}).png")

    assert write_first_free(names(), b"z") == tmp_path / "a (2).png"
    assert drawn == [1, 2]


def test_every_candidate_taken_is_an_output_error(tmp_path):
    (tmp_path / "a.png").write_bytes(b"x")
    with pytest.raises(OutputError, match="taken"):
        write_first_free([tmp_path / "a.png"], b"z")
    assert _leftovers(tmp_path) == []


def test_unwritable_folder_is_an_output_error_naming_the_file(tmp_path):
    with pytest.raises(OutputError, match="missing"):
        write_new(tmp_path / "missing" / "a.png", b"z")


def test_concurrent_writers_get_distinct_names(tmp_path):
    names = [tmp_path / "a.png", *(tmp_path / f"a ({n}).png" for n in range(2, 20))]
    results: list = []
    barrier = threading.Barrier(8)

    def publish(i: int) -> None:
        barrier.wait(timeout=10)
        results.append((write_first_free(names, f"w{i}".encode()), i))

    threads = [threading.Thread(target=publish, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert len({p for p, _ in results}) == 8
    assert all(p.read_bytes() == f"w{i}".encode() for p, i in results)
    assert _leftovers(tmp_path) == []


def test_temp_names_are_hidden_and_recognisable(tmp_path):
    assert is_temp_name(tmp_path / ".a.png.1f2e3d4c.naiup-tmp")
    assert not is_temp_name(tmp_path / "a.png") and not is_temp_name(tmp_path / ".hidden.png")


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="tells directories from files via /proc")
def test_a_folder_that_refuses_fsync_still_publishes_once(tmp_path, monkeypatch):
    # Some shares refuse fsync on a directory; the output is already linked by then, so the write
    # must succeed (an error here would make the job retry and publish a " (2)" copy).
    import os

    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if os.path.isdir(f"/proc/self/fd/{fd}") or not os.path.exists(f"/proc/self/fd/{fd}"):
            raise OSError(22, "Invalid argument")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    final = write_new(tmp_path / "out.png", b"data")
    assert final.read_bytes() == b"data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]
