"""Tray icons drawn with Pillow, one look per state; no image files to ship or lose."""

from __future__ import annotations

from PIL import Image, ImageDraw

from naiup.tray.menu import IconState

# Colour carries the state at 16 px where shapes blur; the shape repeats it for colour-blind users.
COLOURS: dict[IconState, tuple[int, int, int]] = {
    IconState.IDLE: (46, 160, 67),  # green
    IconState.WORKING: (31, 111, 235),  # blue
    IconState.PAUSED: (219, 143, 0),  # amber
    IconState.WARNING: (240, 190, 0),  # yellow, with a dark "!" (the error's is white on red)
    IconState.ERROR: (207, 34, 46),  # red
    IconState.OFFLINE: (110, 118, 129),  # grey
}


def draw_icon(state: IconState, progress: float | None = None, size: int = 64) -> Image.Image:
    """An RGBA square: a filled disc in the state colour, a glyph, and a progress ring when working."""
    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    colour = COLOURS[state]
    pad = max(1, size // 16)
    box = (pad, pad, size - 1 - pad, size - 1 - pad)
    d.ellipse(box, fill=(*colour, 255))
    c, u = size / 2, size / 8  # centre, unit
    white = (255, 255, 255, 255)
    if state is IconState.PAUSED:
        d.rectangle((c - 1.6 * u, c - 1.8 * u, c - 0.5 * u, c + 1.8 * u), fill=white)
        d.rectangle((c + 0.5 * u, c - 1.8 * u, c + 1.6 * u, c + 1.8 * u), fill=white)
    elif state in (IconState.ERROR, IconState.WARNING):
        mark = white if state is IconState.ERROR else (40, 30, 0, 255)
        d.rectangle((c - 0.5 * u, c - 2 * u, c + 0.5 * u, c + 0.6 * u), fill=mark)
        d.rectangle((c - 0.5 * u, c + 1.1 * u, c + 0.5 * u, c + 2 * u), fill=mark)
    elif state is IconState.OFFLINE:
        d.line((c - 1.5 * u, c - 1.5 * u, c + 1.5 * u, c + 1.5 * u), fill=white, width=max(1, size // 12))
        d.line((c - 1.5 * u, c + 1.5 * u, c + 1.5 * u, c - 1.5 * u), fill=white, width=max(1, size // 12))
    else:
        # An upward arrow: "enlarging"; the idle and working icons differ by colour and the ring.
        d.polygon([(c, c - 2 * u), (c - 1.6 * u, c), (c + 1.6 * u, c)], fill=white)
        d.rectangle((c - 0.6 * u, c, c + 0.6 * u, c + 2 * u), fill=white)
    if state is IconState.WORKING and progress is not None:
        end = -90 + 360 * max(0.0, min(1.0, progress))
        d.arc(box, start=-90, end=end, fill=white, width=max(2, size // 10))
    return img
