"""Pillow-drawn state icons and batched notifications."""

from __future__ import annotations

from naiup.tray.icon import COLOURS, draw_icon
from naiup.tray.menu import IconState
from naiup.tray.notify import Notifier


def test_each_state_has_its_own_icon_in_its_colour():
    images = {state: draw_icon(state, size=32) for state in IconState}
    assert len({img.tobytes() for img in images.values()}) == len(IconState)
    for state, img in images.items():
        assert img.size == (32, 32) and img.mode == "RGBA"
        # The disc's rim (inside the padding, off the glyph) carries the state colour.
        assert img.getpixel((16, 4))[:3] == COLOURS[state]
        assert img.getpixel((0, 0))[3] == 0  # transparent corners


def test_working_icon_shows_progress_as_a_ring():
    empty = draw_icon(IconState.WORKING, 0.0, size=64)
    half = draw_icon(IconState.WORKING, 0.5, size=64)
    full = draw_icon(IconState.WORKING, 1.0, size=64)
    assert empty.tobytes() != half.tobytes() != full.tobytes()
    # The ring runs clockwise from 12 o'clock: at 50% the right edge is white, the left edge is not.
    assert half.getpixel((59, 32))[:3] == (255, 255, 255)
    assert half.getpixel((4, 32))[:3] == COLOURS[IconState.WORKING]


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def __call__(self, title: str, message: str) -> None:
        self.sent.append((title, message))


def done(path: str) -> dict:
    return {"event": "job_done", "path": path, "output": path.replace(".png", ".naiup-refine-2x.png")}


def test_successes_are_batched_into_one_notification():
    rec = Recorder()
    n = Notifier(rec, batch_seconds=5.0)
    for i, t in enumerate([0.0, 1.0, 2.0]):
        n.on_event(done(f"/d/img{i}.png"), t)
    n.flush(4.9)
    assert rec.sent == []
    n.flush(5.0)
    assert rec.sent == [("naiup", "3 images refined")]
    n.flush(20.0)
    assert len(rec.sent) == 1


def test_a_single_success_names_the_file():
    rec = Recorder()
    n = Notifier(rec, batch_seconds=5.0)
    n.on_event(done("/d/portrait.png"), 0.0)
    n.flush(0.0, force=True)
    assert rec.sent == [("naiup", "portrait.naiup-refine-2x.png refined")]


def test_failures_are_sent_at_once_even_with_notifications_off():
    rec = Recorder()
    n = Notifier(rec, successes=False, batch_seconds=5.0)
    n.on_event(done("/d/a.png"), 0.0)
    n.on_event({"event": "job_failed", "path": "/d/broken.png", "error": "PNG is truncated"}, 0.5)
    n.flush(100.0)
    assert rec.sent == [("naiup: refine failed", "broken.png: PNG is truncated")]


def test_a_failing_notification_backend_does_not_raise():
    def broken(title: str, message: str) -> None:
        raise RuntimeError("no notification daemon")

    n = Notifier(broken)
    n.on_event({"event": "job_failed", "path": "/d/x.png", "error": "bad"}, 0.0)  # logged, not raised


class ClickRecorder:
    """A notification backend with actions: records what was sent and clicks it at once."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str]] = []

    def __call__(self, title, message, label, on_click) -> None:
        self.sent.append((title, message, label))
        on_click()


def test_a_done_notification_click_reports_the_outputs_it_announced():
    clicks: list[list[str]] = []
    rec, plain = ClickRecorder(), Recorder()
    n = Notifier(plain, batch_seconds=5.0, click_send=rec, on_click=clicks.append)
    n.on_event(done("/d/one.png"), 0.0)
    n.flush(5.0)
    for i in range(3):
        n.on_event(done(f"/d/many{i}.png"), 10.0)
    n.flush(15.0)
    assert rec.sent == [
        ("naiup", "one.naiup-refine-2x.png refined", "Compare"),
        ("naiup", "3 images refined", "Open gallery"),
    ]
    assert clicks == [["/d/one.naiup-refine-2x.png"], [f"/d/many{i}.naiup-refine-2x.png" for i in range(3)]]
    assert plain.sent == []


def test_failures_stay_plain_and_a_broken_clickable_backend_falls_back():
    def broken(title, message, label, on_click):
        raise OSError("notify-send vanished")

    plain = Recorder()
    n = Notifier(plain, batch_seconds=0.0, click_send=broken, on_click=lambda outputs: None)
    n.on_event({"event": "job_failed", "path": "/d/x.png", "error": "bad"}, 0.0)
    n.on_event(done("/d/y.png"), 0.0)
    assert plain.sent == [("naiup: refine failed", "x.png: bad"), ("naiup", "y.naiup-refine-2x.png refined")]


def test_notifications_show_undecodable_names_escaped():
    rec = Recorder()
    n = Notifier(rec, batch_seconds=5.0)
    n.on_event({"event": "job_failed", "path": "/d/img\udcfe.png", "error": "img\udcfe.png: bad"}, 0.0)
    n.on_event(done("/d/new\nline.png"), 0.0)
    n.flush(0.0, force=True)
    assert rec.sent == [
        ("naiup: refine failed", "img\\xfe.png: img\\xfe.png: bad"),
        ("naiup", "new\\nline.naiup-refine-2x.png refined"),
    ]
