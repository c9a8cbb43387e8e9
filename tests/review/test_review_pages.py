"""compare and gallery pages without a browser: pairing, page data, placeholders, thumbnails, the CLI."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import time
from pathlib import Path

import pytest
from legacy_ledger import write_original_ledger
from PIL import Image
from review_helpers import AWKWARD_NAME, FIXTURE, make_output, make_pair, record_done, record_failed

from naiup.cli.main import main as naiup_main
from naiup.daemon.ledger import Ledger, State, default_path
from naiup.errors import NaiupError
from naiup.review import open_compare, open_gallery, recent_outputs, review_dir
from naiup.review.compare import compare_data, render
from naiup.review.gallery import collect
from naiup.review.links import Pair, find_pair, read_provenance
from naiup.review.thumbnails import THUMB_MAX, thumbnail
from naiup.review.urls import file_url


def page_data(page: Path) -> dict:
    text = page.read_text("utf-8")
    block = re.search(r'<script type="application/json" id="naiup-data">(.*?)</script>', text, re.S)
    assert block, "data block missing"
    return json.loads(block.group(1))


def ledger() -> Ledger:
    return Ledger(default_path())


# -- pairing ---------------------------------------------------------------------------------------


def test_output_and_source_find_each_other_without_a_ledger(made):
    by_output = find_pair(made.output, None)
    by_source = find_pair(made.source, None)
    assert (by_output.source, by_output.output) == (made.source, made.output)
    assert (by_source.source, by_source.output) == (made.source, made.output)
    assert by_output.provenance["source_name"] == AWKWARD_NAME
    assert not by_output.source_changed


def test_the_ledger_links_a_renamed_source_and_a_deleted_output(made):
    db = ledger()
    moved = made.source.with_name("renamed.png")
    made.source.rename(moved)
    record_done(db, moved, made.output)
    db.close()
    ro = Ledger.open_readonly(default_path())
    # The output's chunk names the old file name; the ledger knows where the job's input really was.
    assert find_pair(made.output, ro).source == moved
    made.output.unlink()
    pair = find_pair(moved, ro)
    assert pair.output == made.output and pair.provenance is None
    ro.close()


def test_an_image_with_no_result_is_a_clear_error(made, tmp_path):
    lone = tmp_path / "lone.png"
    shutil.copyfile(made.source, lone)
    with pytest.raises(NaiupError, match=r"no naiup result found.*naiup refine"):
        find_pair(lone, None)
    with pytest.raises(NaiupError, match="no such file"):
        find_pair(tmp_path / "nope.png", None)
    db = ledger()
    record_failed(db, lone, "PNG is truncated")
    with pytest.raises(NaiupError, match=r"failed.*PNG is truncated"):
        find_pair(lone, db)
    db.close()


def test_read_only_ledger_never_creates_one(tmp_path):
    assert Ledger.open_readonly(tmp_path / "state" / "ledger.sqlite3") is None
    assert not (tmp_path / "state").exists()


def test_a_reader_finds_rows_of_a_ledger_the_daemon_has_not_migrated_yet(made):
    # Paths became bytes in migration 1; a reader must neither migrate the file nor miss its TEXT rows.
    path = default_path()
    row = {"path": str(made.source), "output": str(made.output), "state": "done", "finished": time.time()}
    write_original_ledger(path, [{**row, "preset": "upscale-2x", "hash": "h"}])
    ro = Ledger.open_readonly(path)
    assert ro.by_output(made.output).path == str(made.source)
    assert ro.by_path(made.source).output == str(made.output)
    assert ro.by_path(made.source.with_name(os.fsdecode(b"\xfe.png"))) is None  # asked, no crash
    assert [i.output for i in ro.recent((State.DONE,))] == [str(made.output)]
    ro.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 0
    assert db.execute("SELECT typeof(path), typeof(output) FROM items").fetchone() == ("text", "text")
    db.close()


def test_a_name_that_is_not_utf8_gets_pages_with_its_name_escaped_and_its_bytes_in_the_urls(
    tmp_path, nai_fixtures
):
    odd = make_pair(tmp_path / "dl", nai_fixtures, os.fsdecode(b"img\xfe\x82\xa0.png"))
    moved = odd.source.with_name(os.fsdecode(b"moved\xfe.png"))
    odd.source.rename(moved)  # only the ledger (bytes) can pair the output with the moved original
    db = ledger()
    record_done(db, moved, odd.output, finished=time.time())
    db.close()
    data = page_data(open_compare(odd.output, open_browser=False))
    assert data["original"]["name"] == "moved\\xfe.png" and data["original"]["exists"]
    assert data["result"]["name"] == "img\\xfe\\x82\\xa0.naiup-upscale-2x.png"
    assert data["original"]["url"] == file_url(moved) and data["original"]["url"].endswith("/moved%FE.png")
    assert data["result"]["url"].endswith("/img%FE%82%A0.naiup-upscale-2x.png")
    text = open_gallery(open_browser=False).read_text("utf-8")
    assert "img\\xfe\\x82\\xa0.naiup-upscale-2x.png" in text


def test_a_changed_original_is_noticed(made):
    with Image.open(made.source) as im:
        im.convert("RGB").save(made.source)  # re-saved: other bytes
    assert find_pair(made.output, None).source_changed


# -- the compare page --------------------------------------------------------------------------------


def test_compare_page_data_has_sizes_urls_provenance_and_the_prompt(made):
    page = open_compare(made.output, open_browser=False)
    assert page.parent == review_dir() / "compare" and page.suffix == ".html"
    data = page_data(page)
    assert (data["width"], data["height"]) == (1280, 1280)
    assert data["original"]["url"] == file_url(made.source) and data["original"]["exists"]
    assert data["result"]["url"] == file_url(made.output) and data["result"]["width"] == 1280
    rows = {s["title"]: dict(s["rows"]) for s in data["sections"]}
    assert rows["How it was made"]["preset"] == "upscale-2x"
    assert rows["How it was made"]["refine"] == "no (upscale only)"
    assert rows["NovelAI generation"]["seed"] == "177879407"
    texts = dict(data["texts"])
    assert "aris" in texts["NovelAI prompt"]
    # Images are referenced, never embedded.
    assert "data:image" not in page.read_text("utf-8")


def test_refine_provenance_shows_family_model_set_seed_denoise_steps_and_timing(made):
    prov = read_provenance(made.output)
    prov["preset"].update(name="refine-2x", refine=True)
    prov["parameters"].update(
        refine=True, denoise=0.2, steps=10, cfg=1.0, sampler="lcm", seed=42, refiner_id="sd15-abc123"
    )
    db = ledger()
    record_done(db, made.source, made.output, finished=time.time())
    item = db.by_output(made.output)
    data = compare_data(Pair(made.source, made.output, item, prov))
    made_rows = dict(next(s["rows"] for s in data["sections"] if s["title"] == "How it was made"))
    assert made_rows["family"] == "SD 1.5"
    assert made_rows["model set"] == "sd15-abc123"
    assert (made_rows["denoise"], made_rows["steps"], made_rows["seed"]) == ("0.2", "10 (2 UNet steps)", "42")
    timing = dict(next(s["rows"] for s in data["sections"] if s["title"] == "Timing"))
    # Nothing records whether a job loaded its model (the worker loads it before the first job): no claim.
    assert timing["took"] == "2.5 s"


def test_missing_original_and_output_get_placeholders_not_a_broken_page(made):
    made.source.unlink()
    data = compare_data(find_pair(made.output, None))
    assert data["original"]["exists"] is False
    assert "original not found" in data["original"]["missing"]
    db = ledger()
    record_done(db, made.source, made.output)
    made.output.unlink()
    data = compare_data(find_pair(made.output, db))
    assert data["result"]["exists"] is False and "result not found" in data["result"]["missing"]
    assert (data["width"], data["height"]) == (1024, 1024)  # neither file left: the fallback shape


def test_the_page_data_cannot_end_its_script_block(tmp_path):
    text = render("compare.html", "</title><script>x</script>", {"p": "</script><b>&"})
    assert "</script><b>" not in text and "<script>x" not in text
    block = re.search(r'id="naiup-data">(.*?)</script>', text, re.S).group(1)
    assert json.loads(block) == {"p": "</script><b>&"}


# -- thumbnails and the gallery ----------------------------------------------------------------------


def test_thumbnails_are_small_and_made_again_only_when_the_output_changes(made, tmp_path):
    folder = tmp_path / "thumbs"
    first = thumbnail(made.output, folder)
    with Image.open(first) as im:
        assert max(im.size) == THUMB_MAX
    made_at = first.stat().st_mtime_ns
    assert thumbnail(made.output, folder) == first and first.stat().st_mtime_ns == made_at
    Image.new("RGB", (300, 100), "red").save(made.output)  # changed: new size and mtime
    os.utime(made.output, ns=(time.time_ns(), time.time_ns() + 10**9))
    second = thumbnail(made.output, folder)
    assert second != first and not first.exists()
    with Image.open(second) as im:
        assert im.size == (256, 85)


def test_gallery_lists_newest_first_with_failures_and_reasons(tmp_path, nai_fixtures):
    db = ledger()
    t = time.time()
    older = make_pair(tmp_path / "a", nai_fixtures, "older.png")
    newer = make_pair(tmp_path / "b", nai_fixtures, "newer.png")
    record_done(db, older.source, older.output, finished=t - 3600)
    record_done(db, newer.source, newer.output, finished=t - 60)
    record_failed(db, tmp_path / "a" / "broken.png", "incomplete: file is empty", finished=t - 30)
    entries = collect(db)
    assert [e.source.name for e in entries] == ["broken.png", "newer.png", "older.png"]
    assert entries[0].failed and entries[0].error == "incomplete: file is empty"
    assert [e.source.name for e in collect(db, since=t - 600)] == ["broken.png", "newer.png"]
    assert [e.source.name for e in collect(db, under=tmp_path / "a")] == ["broken.png", "older.png"]
    db.close()
    page = open_gallery(open_browser=False)
    text = page.read_text("utf-8")
    assert text.index("newer.naiup-upscale-2x.png") < text.index("older.naiup-upscale-2x.png")
    assert "incomplete: file is empty" in text and "broken.png" in text
    thumbs = list((review_dir() / "thumbs").glob("*.jpg"))
    compares = list((review_dir() / "compare").glob("*.html"))
    assert len(thumbs) == 2 and len(compares) == 2
    for p in thumbs + compares:
        assert f'"{file_url(p)}"' in text  # each card links its compare page and shows its thumbnail
    # A compare page opened from here links back to the gallery.
    assert all(page_data(c)["gallery_url"] == file_url(page) for c in compares)


def test_gallery_limit_counts_results_not_failed_files(tmp_path, nai_fixtures):
    db = ledger()
    t = time.time()
    for i in range(2):
        p = make_pair(tmp_path / f"d{i}", nai_fixtures, f"img{i}.png")
        record_done(db, p.source, p.output, finished=t - 60 + i)
    record_failed(db, tmp_path / "broken.png", "incomplete: file is empty", finished=t)
    entries = collect(db, limit=1)
    assert [e.source.name for e in entries] == ["broken.png", "img1.png"]
    db.close()


def test_gallery_folder_adds_outputs_of_naiup_refine_that_the_ledger_never_saw(made):
    entries = collect(None, under=made.source.parent)
    assert [(e.source, e.output) for e in entries] == [(made.source, made.output)]


def test_recent_outputs_are_newest_first_and_skip_deleted_files(tmp_path, nai_fixtures):
    assert recent_outputs() == []  # no ledger yet
    db = ledger()
    pairs = [make_pair(tmp_path / f"d{i}", nai_fixtures, f"img{i}.png") for i in range(3)]
    for i, p in enumerate(pairs):
        record_done(db, p.source, p.output, finished=time.time() - 100 + i)
    pairs[1].output.unlink()
    db.close()
    assert recent_outputs() == [str(pairs[2].output), str(pairs[0].output)]


# -- the CLI -----------------------------------------------------------------------------------------


def test_cli_compare_prints_the_page_and_exits_0(made, capsys):
    assert naiup_main(["compare", "--no-open", str(made.source)]) == 0
    page = Path(capsys.readouterr().out.strip())
    assert page.is_file() and page_data(page)["result"]["path"] == str(made.output)


def test_cli_compare_of_an_unknown_image_exits_1_with_the_reason(tmp_path, nai_fixtures, capsys):
    lone = tmp_path / "lone.png"
    shutil.copyfile(nai_fixtures / FIXTURE, lone)
    assert naiup_main(["compare", "--no-open", str(lone)]) == 1
    assert "no naiup result found" in capsys.readouterr().err


def test_cli_gallery_writes_the_page(made, capsys):
    assert naiup_main(["gallery", "--no-open", "--since", "1h", "--folder", str(made.source.parent)]) == 0
    page = Path(capsys.readouterr().out.strip())
    assert page.name == "gallery.html" and made.output.name in page.read_text("utf-8")


def test_cli_compare_opens_the_browser_unless_told_not_to(made, monkeypatch, capsys):
    opened = []
    monkeypatch.setattr("webbrowser.open", lambda url: opened.append(url) or True)
    assert naiup_main(["compare", str(made.output)]) == 0
    page = Path(capsys.readouterr().out.strip())
    assert opened == [file_url(page)]


def test_output_made_twice_keeps_one_compare_page(made):
    first = open_compare(made.output, open_browser=False)
    assert open_compare(made.source, open_browser=False) == first
    second_output = make_output(made.source)  # "<stem>.naiup-upscale-2x (2).png"
    assert open_compare(second_output, open_browser=False) != first


def test_page_templates_ship_as_package_data():
    import fnmatch
    import tomllib

    repo = Path(__file__).resolve().parents[2]
    config = tomllib.loads((repo / "pyproject.toml").read_text("utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["naiup"]
    static = sorted((repo / "naiup" / "review" / "static").iterdir())
    assert static
    for f in static:
        rel = f.relative_to(repo / "naiup").as_posix()
        assert any(fnmatch.fnmatch(rel, p) for p in patterns), f"{rel} would be missing from a wheel"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX-only")
def test_a_fifo_is_not_a_regular_file_and_gets_no_refine_advice(tmp_path):
    pipe = tmp_path / "b.png"
    os.mkfifo(pipe)
    with pytest.raises(NaiupError) as err:
        find_pair(pipe, None)
    assert str(err.value) == f"{pipe}: not a regular file"
