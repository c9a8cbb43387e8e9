"""Render the tray menu on an X display (Xvfb in CI) and save a screenshot for the README.

    Xvfb :57 -screen 0 560x400x24 & DISPLAY=:57 python docs/make_tray_screenshot.py docs/tray-menu.png

pystray's xorg backend has no menu (its HAS_MENU is False) and Xvfb has no tray host, so the entries come from
naiup.tray.menu.build_menu (what every backend shows) and are posted as real Tk popup menus;
the icon beside them is naiup's own drawn icon. The root window is then grabbed with python-xlib.
Not a test and not collected by pytest.
"""

from __future__ import annotations

import sys
import tkinter as tk
from pathlib import Path

from PIL import Image, ImageTk
from Xlib import X, display

from naiup.control.protocol import Status
from naiup.tray.icon import draw_icon
from naiup.tray.menu import IconState, MenuEntry, TrayState, build_menu, tooltip

STATUS = {
    "ok": True,
    "state": "working",
    "active_preset": "refine-2x",
    "presets": ["refine-2x", "refine-4x", "upscale-2x"],
    "current": {"path": "~/Downloads/nai-1234.png", "progress": 0.6},
    "queue_length": 2,
    "counts": {"done": 14, "failed": 1},
    "last_output": "~/Downloads/nai-1233.naiup-refine-2x.png",
    "watch_folders": ["~/Downloads"],
    "log_path": "~/.local/state/naiup/log/naiup.log",
}


def fill(menu: tk.Menu, entries: list[MenuEntry], variables: list[tk.Variable]) -> dict[str, tk.Menu]:
    subs = {}
    preset = tk.StringVar(value=next((e.text for e in entries if e.radio and e.checked), ""))
    variables.append(preset)
    for e in entries:
        state = "normal" if e.enabled else "disabled"
        if e.separator:
            menu.add_separator()
        elif e.submenu:
            sub = tk.Menu(menu, tearoff=0)
            subs[e.text] = sub
            fill(sub, list(e.submenu), variables)
            menu.add_cascade(label=e.text, menu=sub, state=state)
        elif e.radio:
            menu.add_radiobutton(label=e.text, variable=preset, value=e.text, state=state)
        elif e.checked is not None:
            var = tk.BooleanVar(value=e.checked)
            variables.append(var)
            menu.add_checkbutton(label=e.text, variable=var, state=state)
        else:
            bold = ("TkDefaultFont", 10, "bold") if e.default else None
            menu.add_command(label=e.text, state=state, font=bold)
    return subs


def main(out: Path) -> None:
    state = TrayState(Status.from_json(STATUS))
    root = tk.Tk()
    w, h = root.winfo_screenwidth(), root.winfo_screenheight()
    root.geometry(f"{w}x{h}+0+0")
    root.configure(bg="#2d3340")
    bar = tk.Frame(root, bg="#1f232b", height=34)
    bar.pack(fill="x")
    icon = ImageTk.PhotoImage(draw_icon(IconState.WORKING, 0.6, size=24))
    tk.Label(bar, image=icon, bg="#1f232b").pack(side="right", padx=8, pady=4)
    tk.Label(bar, text=tooltip(state), fg="#e6e6e6", bg="#1f232b").pack(side="right")
    variables: list[tk.Variable] = []
    menu = tk.Menu(root, tearoff=0)
    subs = fill(menu, build_menu(state), variables)
    root.update()
    x, y = w - 250, 40
    menu.post(x, y)
    root.update()
    presets_index = next(i for i in range(menu.index("end") + 1) if menu.type(i) == "cascade")
    subs["Presets"].post(x - 130, y + menu.yposition(presets_index))
    root.update()
    root.after(300, root.quit)
    root.mainloop()
    d = display.Display()
    raw = d.screen().root.get_image(0, 0, w, h, X.ZPixmap, 0xFFFFFFFF)
    Image.frombytes("RGB", (w, h), raw.data, "raw", "BGRX").save(out, optimize=True)
    root.destroy()


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/tray-menu.png"))
