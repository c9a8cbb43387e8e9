"""A minimal X11 system tray host for tests: it owns `_NET_SYSTEM_TRAY_S0` and embeds docking icons.

    python tray_host_standin.py STATE_FILE      (on $DISPLAY; SIGTERM or kill ends it like a panel crash)

STATE_FILE gets one line per event: "ready", then "docked <window id>" per dock request. The icons it
embeds are children of its window and not in its save-set, so when it exits they are destroyed with
it, as with a panel restart. (The system tray protocol: freedesktop.org "System Tray Protocol
Specification"; only the dock request is handled.)
"""

from __future__ import annotations

import sys

import Xlib.display
from Xlib import X
from Xlib.protocol import event

REQUEST_DOCK = 0


def main(state_file: str) -> None:
    display = Xlib.display.Display()
    screen = display.screen()
    tray = screen.root.create_window(0, 0, 200, 40, 0, screen.root_depth, event_mask=X.StructureNotifyMask)
    tray.map()
    selection = display.intern_atom(f"_NET_SYSTEM_TRAY_S{display.get_default_screen()}")
    opcode = display.intern_atom("_NET_SYSTEM_TRAY_OPCODE")
    tray.set_selection_owner(selection, X.CurrentTime)
    manager = display.intern_atom("MANAGER")
    # Announce the new manager, as the spec asks, so icons waiting for one can dock.
    screen.root.send_event(
        event.ClientMessage(
            window=screen.root,
            client_type=manager,
            data=(32, [X.CurrentTime, selection, tray.id, 0, 0]),
        ),
        event_mask=X.StructureNotifyMask,
    )
    display.flush()
    _note(state_file, "ready")
    x = 0
    while True:
        ev = display.next_event()
        if ev.type == X.ClientMessage and ev.client_type == opcode and ev.data[1][1] == REQUEST_DOCK:
            icon = display.create_resource_object("window", ev.data[1][2])
            icon.reparent(tray, x, 0)
            display.flush()
            x += 24
            _note(state_file, f"docked {icon.id}")


def _note(path: str, line: str) -> None:
    with open(path, "a") as f:
        f.write(line + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
