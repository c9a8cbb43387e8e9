"""file:// URLs for awkward local paths: POSIX bytes and Windows drive letters, decoded back exactly."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath
from urllib.parse import unquote, urlsplit

import pytest

from naiup.review.urls import file_url

AWKWARD = ["a b.png", "#1.png", "100%.png", "%41.png", "?.png", "ñ 日本 é.png", "a&b;c=d.png", "x'y\".png"]


@pytest.mark.parametrize("name", AWKWARD)
def test_posix_names_survive_the_round_trip(name):
    path = PurePosixPath("/home/me/Down loads #2") / name
    url = file_url(path)
    parts = urlsplit(url)
    # Nothing of the name leaks into a query or fragment, and decoding gives the path back.
    assert (parts.scheme, parts.netloc, parts.query, parts.fragment) == ("file", "", "", "")
    assert unquote(parts.path) == str(path)
    assert " " not in url and "#" not in url and "?" not in url


def test_percent_is_escaped_so_a_name_is_never_read_as_an_escape():
    assert file_url(PurePosixPath("/d/%41.png")) == "file:///d/%2541.png"


def test_non_ascii_is_utf8_percent_encoded():
    assert file_url(PurePosixPath("/d/é.png")) == "file:///d/%C3%A9.png"


@pytest.mark.skipif(os.name == "nt", reason="POSIX file-system bytes")
def test_a_name_that_is_not_utf8_keeps_its_bytes():
    path = Path(os.fsdecode(b"/d/caf\xe9.png"))
    assert file_url(path) == "file:///d/caf%E9.png"


@pytest.mark.parametrize(
    ("path", "url"),
    [
        (r"C:\Users\Zoë\Downloads\a b #1.png", "file:///C:/Users/Zo%C3%AB/Downloads/a%20b%20%231.png"),
        (r"d:\100%\x.png", "file:///d:/100%25/x.png"),
        (r"\\server\share\dir\a b.png", "file://server/share/dir/a%20b.png"),
        (r"\\?\C:\very\long.png", "file:///C:/very/long.png"),
        (r"\\?\UNC\server\share\x.png", "file://server/share/x.png"),
    ],
)
def test_windows_paths_keep_their_drive_letter(path, url):
    assert file_url(PureWindowsPath(path)) == url


def test_windows_urls_match_pathlib():
    # pathlib's as_uri is the reference for plain drive paths; ours adds the \\?\ forms on top.
    path = PureWindowsPath(r"C:\Users\Zoë\a b #1 100%.png")
    assert file_url(path) == path.as_uri()


def test_relative_posix_paths_are_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert unquote(urlsplit(file_url("x y.png")).path) == str(tmp_path / "x y.png")
