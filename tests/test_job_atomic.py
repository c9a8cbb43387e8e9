"""Atomic, no-clobber publishing (naiup/output/atomic.py)."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import pytest

from naiup.errors import OutputError
from naiup.output import atomic
from naiup.output.atomic import TEMP_SUFFIX, check_writable, write_first_free, write_new


def _leftovers(folder):
    # Our temps are hidden and end in TEMP_SUFFIX: the pattern the daemon's clean-up globs for.
    return [p.name for p in folder.glob(f".*{TEMP_SUFFIX}")]


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


def test_unwritable_folder_is_an_output_error_saying_why(tmp_path):
    with pytest.raises(OutputError, match="cannot write beside the original: the folder is gone"):
        write_new(tmp_path / "missing" / "a.png", b"z")


def test_check_writable_tries_a_real_file_there_and_says_why_it_cannot(tmp_path):
    # Real refusals a test can arrange as root: a folder that is gone, a "folder" that is a file.
    with pytest.raises(OutputError, match="cannot write beside the original: the folder is gone"):
        check_writable(tmp_path / "missing" / "a.png")
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(OutputError, match="cannot write beside the original: ") as err:
        check_writable(tmp_path / "file" / "a.png")
    assert err.value.transient is False
    check_writable(tmp_path / "a.png")  # a writable folder: no error, and nothing left there
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


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


def test_a_long_name_is_published_although_a_temp_named_after_it_would_not_fit(tmp_path):
    # The temp used to be ".<name>.<8 hex>.naiup-tmp": 20 bytes more than a name that fits by itself.
    final = tmp_path / ("長" * 78 + ".naiup-upscale-2x.png")
    assert len(os.fsencode(final.name)) == 255  # the longest name most file systems take
    assert write_new(final, b"data").read_bytes() == b"data" and _leftovers(tmp_path) == []


def test_a_name_the_file_system_refuses_fails_at_once_with_a_plain_reason(tmp_path):
    with pytest.raises(OutputError, match="cannot write beside the original: the file name is too long"):
        write_new(tmp_path / ("a" * 300 + ".png"), b"data")


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (errno.EROFS, "the folder is read-only"),
        (errno.EACCES, "permission denied"),
        (errno.EPERM, "permission denied"),
        (errno.ENAMETOOLONG, "the file name is too long"),
    ],
)
def test_permanent_write_errors_fail_at_once_and_the_cleanup_never_hides_them(
    tmp_path, monkeypatch, code, reason
):
    # Running as root, a chmod'ed folder stays writable: the OS error comes from our own seam. The
    # cleanup of the temp then fails too, as it does in a read-only folder; that must not replace it.
    tries = []

    def refuse(tmp: Path, data: bytes) -> None:
        tries.append(tmp)
        raise OSError(code, os.strerror(code), str(tmp))

    def unlink(self: Path, missing_ok: bool = False) -> None:
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(atomic, "_write_synced", refuse)
    monkeypatch.setattr(Path, "unlink", unlink)
    with pytest.raises(OutputError) as info:
        write_new(tmp_path / "a.png", b"z")
    assert str(info.value).startswith(f"cannot write beside the original: {reason}")
    assert len(tries) == 1 and info.value.transient is False


def test_a_full_disk_is_retried_with_backoff_and_then_is_a_transient_error(tmp_path, monkeypatch):
    real, tries, slept = atomic._write_synced, [], []

    def full_twice(tmp: Path, data: bytes) -> None:
        tries.append(tmp)
        if len(tries) <= 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp))
        real(tmp, data)

    monkeypatch.setattr(atomic, "_sleep", slept.append)
    monkeypatch.setattr(atomic, "_write_synced", full_twice)
    assert write_new(tmp_path / "a.png", b"z").read_bytes() == b"z"
    assert slept == list(atomic.RETRY_DELAYS) and len(tries) == 3 and _leftovers(tmp_path) == []

    def always_full(tmp: Path, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp))

    slept.clear()
    monkeypatch.setattr(atomic, "_write_synced", always_full)
    with pytest.raises(OutputError, match="the disk is full") as info:
        write_new(tmp_path / "b.png", b"z")
    assert info.value.transient is True and slept == list(atomic.RETRY_DELAYS)
