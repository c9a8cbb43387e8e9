"""The pages in a real browser: headless Chromium renders them and the screenshots' pixels are checked.

Compare page: a real NovelAI image and its naiup output (colour-inverted by the stand-in engine, see
review_helpers) at two divider positions set through the URL fragment; left of the divider every
pixel must come from the original, right of it from the result, at the positions the page's fit and
zoom put them (so both layers are also checked to move together). Gallery: every thumbnail must be
drawn where the page shows it (a broken image would leave the box empty).

Skipped, with the reason, only where no Chromium is installed (`.ci/run` installs Debian's package).
NAIUP_DOCS_SCREENSHOTS=1 also writes the README's screenshot (docs/compare-page.png).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from review_helpers import make_pair, record_done, record_failed

from naiup.daemon.ledger import Ledger, default_path
from naiup.review import open_compare, open_gallery, review_dir
from naiup.review.urls import file_url

REPO = Path(__file__).resolve().parents[2]
VIEW = (900, 600)  # window = viewer with the panel hidden (#panel=0)
EDGE = 24  # px either side of the divider line and its knob
BANDS = 40  # px at the top and bottom: the labels and the zoom line


def find_chromium() -> str | None:
    for name in (os.environ.get("NAIUP_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium not found (Debian: apt-get install chromium; .ci/run installs it)"
)


def screenshot(url: str, out: Path, size: tuple[int, int] = VIEW) -> np.ndarray:
    argv = [
        CHROMIUM,
        "--headless",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        "--allow-file-access-from-files",
        "--no-first-run",
        "--no-default-browser-check",
        f"--user-data-dir={out.parent / 'chromium-profile'}",
        f"--window-size={size[0]},{size[1]}",
        f"--screenshot={out}",
        url,
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        argv.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
    run = subprocess.run(argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert out.is_file(), f"no screenshot (exit {run.returncode}): {run.stderr[-2000:]}"
    with Image.open(out) as im:
        assert im.size == size
        return np.asarray(im.convert("RGB"), dtype=np.int16)


def expected_view(full: Image.Image, scale: float, tx: float, ty: float, smooth: bool) -> np.ndarray:
    """What the viewer shows of `full` (output-sized) at this transform, on a black view."""
    if scale < 1:  # fit: the browser shrinks with an area filter
        small = full.resize((round(full.width * scale), round(full.height * scale)), Image.BOX)
        canvas = Image.new("RGB", VIEW)
        canvas.paste(small, (round(tx), round(ty)))
    else:
        resample = Image.BILINEAR if smooth else Image.NEAREST
        inverse = (1 / scale, 0, -tx / scale, 0, 1 / scale, -ty / scale)
        canvas = full.transform(VIEW, Image.AFFINE, inverse, resample=resample)
    return np.asarray(canvas, dtype=np.int16)


def check_sides(shot: np.ndarray, original: np.ndarray, result: np.ndarray, split: float, box) -> None:
    """Left of the divider closer to the original, right closer to the result, pixel by pixel."""
    x0, y0, x1, y1 = box  # where the image is on screen
    divider = round(split * VIEW[0])
    rows = slice(max(y0, BANDS), min(y1, VIEW[1] - BANDS))
    # Only pixels where the two differ clearly (inversion leaves mid-grey nearly alike).
    for cols, want, other, side in (
        (slice(x0, divider - EDGE), original, result, "left (original)"),
        (slice(divider + EDGE, x1), result, original, "right (result)"),
    ):
        s, w, o = shot[rows, cols], want[rows, cols], other[rows, cols]
        informative = np.abs(w - o).mean(axis=2) > 60
        assert informative.sum() > 2000, f"{side}: too few pixels to judge"
        near = np.abs(s - w).mean(axis=2)[informative]
        far = np.abs(s - o).mean(axis=2)[informative]
        assert (near < far).mean() > 0.97, f"{side}: only {(near < far).mean():.1%} of pixels match"
        assert np.median(near) < 12, (
            f"{side}: median difference {np.median(near):.1f} from the expected image"
        )


def test_compare_page_shows_original_left_and_result_right_at_two_divider_positions(
    made, tmp_path, nai_fixtures, monkeypatch
):
    page = open_compare(made.output, open_browser=False)
    with Image.open(made.output) as im:
        result = im.convert("RGB")
    with Image.open(made.source) as im:
        original = im.convert("RGB").resize(result.size, Image.BILINEAR)
    w, h = result.size

    # 1. Fitted, divider at 30%.
    scale = min(VIEW[0] / w, VIEW[1] / h)
    tx, ty = (VIEW[0] - w * scale) / 2, (VIEW[1] - h * scale) / 2
    shot = screenshot(f"{file_url(page)}#split=0.3&panel=0", tmp_path / "split30.png")
    box = (round(tx), round(ty), round(tx + w * scale), round(ty + h * scale))
    check_sides(
        shot,
        expected_view(original, scale, tx, ty, True),
        expected_view(result, scale, tx, ty, False),
        0.3,
        box,
    )

    # 2. Divider at 70%, zoomed to 200% on the face: both layers must have moved the same way.
    cx, cy, zoom = 560, 620, 2.0
    tx, ty = VIEW[0] / 2 - cx * zoom, VIEW[1] / 2 - cy * zoom
    shot = screenshot(f"{file_url(page)}#split=0.7&panel=0&zoom=2&x={cx}&y={cy}", tmp_path / "split70.png")
    check_sides(
        shot,
        expected_view(original, zoom, tx, ty, True),
        expected_view(result, zoom, tx, ty, False),
        0.7,
        (0, 0, VIEW[0], VIEW[1]),
    )

    if os.environ.get("NAIUP_DOCS_SCREENSHOTS") == "1":
        # The same page for a plainly named file in ~/Downloads, with the panel shown.
        home = tmp_path / "home"
        monkeypatch.setenv("HOME", str(home))
        # An MIT-licensed fixture (enslo/sd-metadata): the screenshot is committed to the repo.
        plain = make_pair(
            home / "Downloads", nai_fixtures, "miku.png", "nai45_full_832x1216_itxt_stealth.png"
        )
        docs = tmp_path / "docs.png"
        screenshot(
            f"{file_url(open_compare(plain.output, open_browser=False))}#split=0.42", docs, (1200, 700)
        )
        with Image.open(docs) as im:
            im.convert("RGB").quantize(128, method=Image.Quantize.MEDIANCUT).save(
                REPO / "docs" / "compare-page.png", optimize=True
            )


def test_compare_page_shows_a_placeholder_for_a_missing_original(made, tmp_path):
    made.source.unlink()
    page = open_compare(made.output, open_browser=False)
    shot = screenshot(f"{file_url(page)}#split=0.5&panel=0", tmp_path / "missing.png")
    # The placeholder's amber text and hatching, not the empty viewer background, left of the divider.
    left = shot[BANDS : VIEW[1] - BANDS, 160 : 450 - EDGE]
    amber = (left[..., 0] > 200) & (left[..., 1] > 160) & (left[..., 2] < 140)
    hatch = (np.abs(left - np.array([0x26, 0x22, 0x1A])).sum(axis=2) < 12).mean()
    assert amber.sum() > 200 and hatch > 0.2


def locate(shot: np.ndarray, thumb: np.ndarray) -> tuple[int, int, float]:
    """Where `thumb` appears in `shot` (coarse search at 1/8, then exact): (x, y, mean abs difference)."""

    def shrink(a: np.ndarray, f: int) -> np.ndarray:
        h, w = a.shape[0] // f * f, a.shape[1] // f * f
        return a[:h, :w].reshape(h // f, f, w // f, f, 3).mean(axis=(1, 3))

    f = 8
    small_shot, small_thumb = shrink(shot, f), shrink(thumb, f)
    windows = np.lib.stride_tricks.sliding_window_view(small_shot, small_thumb.shape)[..., 0, :, :, :]
    cost = np.abs(windows - small_thumb).mean(axis=(2, 3, 4))
    gy, gx = np.unravel_index(np.argmin(cost), cost.shape)
    best = (0, 0, float("inf"))
    th, tw = thumb.shape[:2]
    for y in range(max(0, gy * f - f), min(shot.shape[0] - th, gy * f + f) + 1):
        for x in range(max(0, gx * f - f), min(shot.shape[1] - tw, gx * f + f) + 1):
            d = float(np.abs(shot[y : y + th, x : x + tw] - thumb).mean())
            if d < best[2]:
                best = (x, y, d)
    return best


def test_gallery_shows_every_thumbnail(tmp_path, nai_fixtures):
    db = Ledger(default_path())
    for i, fixture in enumerate(("nai3_640_text_stealth.png", "nai3_128_text_stealth_smea_vibe.png")):
        pair = make_pair(tmp_path / f"folder {i}", nai_fixtures, f"image #{i}.png", fixture)
        record_done(db, pair.source, pair.output)
    record_failed(db, tmp_path / "broken.png", "incomplete: file is empty")
    db.close()
    page = open_gallery(open_browser=False)
    shot = screenshot(file_url(page), tmp_path / "gallery.png", size=(900, 700))
    thumbs = sorted((review_dir() / "thumbs").glob("*.jpg"))
    assert len(thumbs) == 2
    spots = []
    for t in thumbs:
        with Image.open(t) as im:
            thumb = np.asarray(im.convert("RGB"), dtype=np.int16)
        x, y, diff = locate(shot, thumb)
        # JPEG decoders differ by a level or two; an unloaded image leaves an empty box (diff ~ 100).
        assert diff < 6, f"{t.name}: not drawn (best match differs by {diff:.1f})"
        spots.append((x, y))
    assert spots[0] != spots[1]
