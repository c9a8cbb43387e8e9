"""`naiup tray`: the tray icon, a separate process that is only a control client of the daemon.

    TrayApp(client_factory=ControlClient.connect).run()     # blocks on the main thread (macOS needs it)

Threads (all started by TrayApp.run, all stopped and joined there):
    main      pystray's loop (`icon.run`)
    events    connect -> status -> subscribe; on loss shows "not running" and reconnects every second
    ticks     polls status (a safety net for missed events), flushes batched notifications, reads the
              test/automation actions file, honours exit_after

For automation and the end-to-end test, `state_file` receives the tray's state as JSON after every
change and `actions_file` is read line by line ("toggle-pause", "preset refine-4x") as if clicked.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from naiup.control.protocol import STATUS_REPLIES, Status
from naiup.errors import NaiupError
from naiup.tray import automation as tray_automation
from naiup.tray import host as tray_host
from naiup.tray import menu as tray_menu
from naiup.tray.backend import (
    call_on_gui_thread,
    load_pystray,
    open_path,
    spawn_daemon,
    to_pystray_items,
)
from naiup.tray.icon import draw_icon
from naiup.tray.menu import Action, TrayState
from naiup.tray.notify import ClickSend, Notifier, pick_click_sender, pick_sender

log = logging.getLogger(__name__)

RECONNECT_SECONDS = 1.0
POLL_SECONDS = 1.0
TICK_SECONDS = 0.1
NUDGE_SECONDS = 0.25


class Client(Protocol):
    """The part of naiup.control.client.ControlClient the tray uses. It speaks JSON: the tray reads
    status replies and events with Status.from_json, so a test's stand-in daemon is plain data."""

    def request(self, verb: str, **args: Any) -> dict[str, Any]: ...

    def subscribe(self) -> Any: ...

    def close(self) -> None: ...


class TrayApp:
    def __init__(
        self,
        client_factory: Callable[[], Client],
        pystray_module: Any | None = None,
        config_path: str = "",
        notifications: bool = True,
        opener: Callable[[str], None] = open_path,
        start_daemon: Callable[[], None] = spawn_daemon,
        state_file: Path | None = None,
        actions_file: Path | None = None,
        exit_after: float | None = None,
        open_compare: Callable[[str], None] | None = None,
        open_gallery: Callable[[], None] | None = None,
        recent_results: Callable[[], list[str]] | None = None,
        host: tray_host.HostWatch | None = None,
        host_wait: float = tray_host.WAIT_SECONDS,
    ) -> None:
        self._client_factory = client_factory
        # The before/after pages (naiup.review); tests pass recorders instead of opening a browser.
        self._open_compare = open_compare or _open_compare
        self._open_gallery = open_gallery or _open_gallery
        self._recent_results = recent_results or _recent_results
        self._pystray = pystray_module
        self._config_path = config_path
        self._opener = opener
        self._start_daemon = start_daemon
        self._state_file = state_file
        self._actions = tray_automation.ActionsReader(actions_file) if actions_file else None
        self._exit_after = exit_after
        self._notifications = notifications
        # The panel showing the icon: when it goes away, wait `host_wait` s for it, then exit 1.
        self._host, self._host_wait = host, host_wait
        self._host_lock = threading.Lock()  # the main thread (after the loop ended) and ticks ask it
        self._host_lost_at: float | None = None
        self._exit_code = 0
        self._lock = threading.Lock()  # guards _state, _client and publishing a state
        self._state = TrayState()
        self._shown = False
        self._client: Client | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        # Every call into the icon goes through this queue to the one "ticks" thread: pystray's xorg
        # backend hands calls to its loop through a single shared reply queue, so two threads calling
        # it at once can take each other's replies and hang forever (seen as a hang on quit).
        self._ui: queue.Queue[TrayState | None] = queue.Queue()
        # The icon whose loop serves calls now: set by its setup callback (pystray's xorg loop can
        # take calls only from then on), cleared when its loop ends. Calls into the icon go to this
        # one, never to a newer icon whose loop is not up yet or to an older one that is gone.
        self._loop_icon: Any | None = None
        self._loop_over = True  # the current icon's loop has ended (or not begun): under _loop_lock
        self._loop_lock = threading.Lock()
        self.icon: Any | None = None
        self.notifier = Notifier(lambda title, message: None, successes=notifications)

    # -- lifecycle -------------------------------------------------------------------------------

    def run(self) -> int:
        """Show the icon until Quit or a signal (0), or until its tray host is gone for good (1)."""
        pystray = self._pystray = self._pystray or load_pystray()
        # pystray logs a traceback per update while undocked; we say it once (see _check_host).
        pystray_log = logging.getLogger("pystray._base")
        if not any(isinstance(f, tray_host.DockNoise) for f in pystray_log.filters):
            pystray_log.addFilter(tray_host.DockNoise())
        previous = self._install_signal_handlers()
        # One for every icon shown: a re-shown icon's notifier keeps the clicks still awaited.
        click_send = pick_click_sender()
        try:
            while True:
                self._run_icon(pystray, click_send)
                if self._stop.is_set():
                    break
                # The loop ended by itself: on X11 the panel that embedded our window took it along
                # when it went (a panel restart). Never a silent exit 0: show it again, or exit 1.
                log.warning("the tray icon's loop ended without Quit (did the panel restart?)")
                if self._host is None or not self._wait_for_host():
                    if not self._stop.is_set():  # a SIGTERM while waiting is an ordinary stop
                        log.error("no tray host to show the icon in; exiting with status 1")
                        self._exit_code = 1
                    break
                log.info("a tray host is there: showing the icon again")
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.shutdown()
        return self._exit_code

    def _run_icon(self, pystray: Any, click_send: ClickSend | None) -> None:
        st = self.state
        self.icon = pystray.Icon(
            "naiup",
            icon=draw_icon(tray_menu.icon_state(st)),
            title=self._title(st),
            menu=pystray.Menu(
                lambda: tuple(to_pystray_items(pystray, tray_menu.build_menu(self.state), self.trigger))
            ),
        )
        self.notifier = Notifier(
            pick_sender(self.icon),
            successes=self._notifications,
            click_send=click_send,
            on_click=self.open_results,
        )
        if not getattr(self.icon, "HAS_MENU", True):
            log.warning("tray backend has no menu; install PyGObject + AppIndicator for one (see README)")
        with self._loop_lock:
            self._loop_over = False
        try:
            self.icon.run(setup=self._setup)
        except Exception:
            # pystray's GTK/AppIndicator loop raises GLib.GError at stop when no notification
            # daemon runs; after a requested stop that is noise, before it a bug.
            if not self._stop.is_set():
                raise
            log.debug("tray loop raised after stop", exc_info=True)
        finally:
            with self._loop_lock:
                self._loop_over, self._loop_icon = True, None
            # pystray's xorg Icon.__del__ calls stop() while it thinks it runs, which then waits
            # forever on the loop that has just ended: tell it the loop is over. Calls still waiting
            # on that loop are answered by _on_gui.
            self.icon._running = False

    def _wait_for_host(self) -> bool:
        assert self._host is not None
        with self._host_lock:
            return tray_host.wait_for_host(self._host, self._host_wait, self._stop)

    def _host_present(self) -> bool | None:
        if self._host is None:
            return None
        with self._host_lock:
            return self._host.present()

    @property
    def _loop_running(self) -> bool:
        return self._loop_icon is not None

    def _setup(self, icon: Any) -> None:
        with self._loop_lock:
            if self._loop_over:  # the panel took the loop along before it was even up
                return
            self._loop_icon = icon
        self._on_gui(lambda i: setattr(i, "visible", True))
        if not self._threads:  # a re-shown icon (panel restart) keeps the threads it had
            self.start_threads()
        elif self._stop.is_set():
            # Quit came while this icon's loop was not up: the ticks thread, already gone, could not
            # stop it, so nothing else would.
            self._on_gui(lambda i: i.stop())

    def start_threads(self) -> None:
        for name, target in (("naiup-tray-events", self._event_loop), ("naiup-tray-ticks", self._tick_loop)):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        """Ask everything to end; safe from any thread, menu callbacks and signal handlers."""
        self._stop.set()
        self._ui.put(None)  # the ticks thread stops the icon, see _ui

    def shutdown(self, timeout: float = 3.0) -> None:
        self._stop.set()
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            _close_quietly(client)  # unblocks the events thread's subscribe()
        for t in self._threads:
            t.join(timeout)
        self._threads = [t for t in self._threads if t.is_alive()]
        self.notifier.flush(time.monotonic(), force=True)
        self.notifier.close()
        if self._host is not None:
            with self._host_lock:
                self._host.close()

    def _install_signal_handlers(self) -> dict[int, Any]:
        """SIGTERM/SIGINT stop the icon (pystray's xorg and GTK loops let Python handlers run)."""
        if threading.current_thread() is not threading.main_thread():
            return {}  # signal handlers can only be installed from the main thread
        previous = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, lambda *_: self.stop())
        return previous

    def _title(self, st: TrayState) -> str:
        title = tray_menu.tooltip(st)
        # pystray's xorg backend sets WM_NAME as latin-1 and raises on anything else (a preset name,
        # an error message from the daemon); "?" for those characters beats a crashed tray.
        backend = getattr(self._pystray, "Icon", None)
        if backend is not None and getattr(backend, "__module__", "").endswith("_xorg"):
            title = title.encode("latin-1", "replace").decode("latin-1")
        return title

    # -- state -----------------------------------------------------------------------------------

    @property
    def state(self) -> TrayState:
        with self._lock:
            return self._state

    def apply_status(self, status: Status | None) -> None:
        """Show a new daemon status (None: no daemon). Called from worker threads."""
        # One lock from state to screen and file: two threads publishing at once must not leave the
        # older status showing.
        with self._lock:
            if self._shown and self._state.status == status:
                return  # the 1 s poll mostly repeats what an event already showed
            self._shown = True
            self._publish(TrayState(status, self._state.recent))

    def refresh_recent(self) -> None:
        """Re-read the newest results from the ledger (at start and after each finished job)."""
        try:
            recent = tuple(self._recent_results())
        except (NaiupError, OSError) as exc:  # a damaged ledger must not stop the tray
            log.warning("cannot read recent results err=%s", exc)
            return
        with self._lock:
            if recent != self._state.recent:
                self._publish(TrayState(self._state.status, recent))

    def _publish(self, st: TrayState) -> None:
        """Under self._lock: the new state to the screen and the state file."""
        self._state = st
        if self.icon is not None:
            self._ui.put(st)
        self._write_state_file(st)

    def _show(self, icon: Any, st: TrayState) -> None:
        icon.icon = draw_icon(tray_menu.icon_state(st), tray_menu.progress(st))
        icon.title = self._title(st)
        icon.update_menu()  # some backends build the menu ahead of time (pystray docs)

    def _write_state_file(self, st: TrayState) -> None:
        if self._state_file is not None:
            backend = type(self.icon).__module__ if self.icon is not None else None
            tray_automation.write_state(self._state_file, st, backend)

    # -- actions ---------------------------------------------------------------------------------

    def trigger(self, action: Action | str, arg: str | None = None) -> None:
        """Do what clicking the menu entry does. Errors are logged, never raised into the GUI loop."""
        action = Action(action)
        cmd = tray_menu.command_for(action, self.state, arg, self._config_path)
        log.info("tray action action=%s arg=%s", action.value, arg)
        try:
            if cmd.local == "quit":
                self.stop()
            elif cmd.local == "start-service":
                self._start_daemon()
            elif cmd.local == "compare":
                self._in_background(action, lambda: self._open_compare(str(cmd.args["image"])))
            elif cmd.local == "gallery":
                self._in_background(action, self._open_gallery)
            elif cmd.verb is not None:
                reply = self._request(cmd.verb, **cmd.args)
                if reply is not None and cmd.verb in STATUS_REPLIES:
                    self.apply_status(Status.from_json(reply))
            elif cmd.open_path:
                self._opener(cmd.open_path)
        except (NaiupError, OSError, EOFError) as exc:
            # Never raised into the GUI loop: a dead daemon shows up as "not running" anyway.
            log.warning("tray action failed action=%s err=%s", action.value, exc)
            self.notifier.notify_now("naiup", str(exc))

    def open_results(self, outputs: list[str]) -> None:
        """A clicked "done" notification: one result opens its compare page, several the gallery."""
        if len(outputs) == 1:
            self.trigger(Action.OPEN_COMPARE, outputs[0])
        else:
            self.trigger(Action.OPEN_GALLERY)

    def _in_background(self, action: Action, fn: Callable[[], None]) -> None:
        """Writing a page (a gallery makes thumbnails) must not freeze the menu: run it on its own thread."""

        def run() -> None:
            try:
                fn()
            except (NaiupError, OSError) as exc:
                log.warning("tray action failed action=%s err=%s", action.value, exc)
                self.notifier.notify_now("naiup", str(exc))

        threading.Thread(target=run, name=f"naiup-tray-{action.value}", daemon=True).start()

    def _request(self, verb: str, **args: Any) -> dict[str, Any] | None:
        with self._lock:
            client = self._client
        if client is None:
            return None
        return client.request(verb, **args)

    # -- threads ---------------------------------------------------------------------------------

    def _event_loop(self) -> None:
        self.refresh_recent()  # the ledger is readable without the service: offline menus have it too
        while not self._stop.is_set():
            try:
                client = self._client_factory()
            except NaiupError as exc:  # DaemonNotRunning is a NaiupError
                log.debug("daemon not reachable err=%s", exc)
                self.apply_status(None)
                self._stop.wait(RECONNECT_SECONDS)
                continue
            with self._lock:
                if self._stop.is_set():  # shutdown ran while we connected: it cannot close this one
                    _close_quietly(client)
                    return
                self._client = client
            try:
                self.apply_status(Status.from_json(client.request("status")))
                self.refresh_recent()  # jobs may have finished while we were away
                for event in client.subscribe():
                    if self._stop.is_set():
                        break
                    self._on_event(event)
            except (NaiupError, OSError, EOFError) as exc:
                log.info("daemon connection lost err=%s", exc)
            finally:
                with self._lock:
                    if self._client is client:
                        self._client = None
                _close_quietly(client)
            if not self._stop.is_set():
                self.apply_status(None)
                self._stop.wait(RECONNECT_SECONDS)

    def _on_event(self, event: dict[str, Any]) -> None:
        if event.get("event") == "status":
            try:
                self.apply_status(Status.from_json(event.get("status")))
            except NaiupError as exc:  # one bad event is no reason to drop the connection
                log.warning("unreadable status event err=%s", exc)
        else:
            if event.get("event") == "job_done":
                self.refresh_recent()
            self.notifier.on_event(event, time.monotonic())

    def _tick_loop(self) -> None:
        started = last_poll = time.monotonic()
        while True:
            try:
                job = self._ui.get(timeout=TICK_SECONDS)
            except queue.Empty:
                job = None
            if self._stop.is_set():
                icon = self._loop_icon
                if icon is not None:
                    self._on_gui(lambda i: i.stop())
                    _flush_xorg(icon)  # the loop's own destroy request may still sit in the buffer
                return
            # Not while the panel is away: an undocked xorg icon fails every update with a traceback.
            if job is not None and self._host_lost_at is None and self._loop_running:
                self._on_gui(lambda i, st=job: self._show(i, st))
            now = time.monotonic()
            self.notifier.flush(now)
            self._read_actions()
            if now - last_poll >= POLL_SECONDS:
                last_poll = now
                self._poll_status()
                self._check_host(now)
            if self._exit_after is not None and now - started >= self._exit_after:
                log.info("tray exit_after reached secs=%.1f", self._exit_after)
                self.stop()

    def _check_host(self, now: float) -> None:
        """Notice the panel going away and coming back while the icon's loop still runs."""
        if not self._loop_running:
            return  # run() handles a loop that ended
        present = self._host_present()
        if present is False and self._host_lost_at is None:
            self._host_lost_at = now
            log.warning("the tray host went away; waiting up to %.0f s for it to come back", self._host_wait)
        elif present is False and now - self._host_lost_at > self._host_wait:  # type: ignore[operator]
            log.error("no tray host came back within %.0f s; exiting with status 1", self._host_wait)
            self._exit_code = 1
            self.stop()
        elif present and self._host_lost_at is not None:
            self._host_lost_at = None
            log.info("the tray host is back: docking the icon again")
            # Setting the image again makes pystray's xorg backend dock with the new panel.
            self._on_gui(lambda i, st=self.state: self._show(i, st))

    def _on_gui(self, fn: Callable[[Any], None]) -> None:
        """Call fn(icon) on the icon whose loop runs now, making sure the call cannot wait forever.

        pystray's xorg backend hands each call to its loop thread as an X message and waits on a
        reply queue for the loop's answer. Two ways that wait never ends:
        - python-xlib can leave the message unsent in its buffer while the loop thread sits in its
          read (seen on Xvfb, more often with a tray host docking the icon): a flush from a third
          thread sends it.
        - the loop ends while fn runs: a panel restart destroys the icon's window, and the loop
          with it, at any moment. fn may hand over several calls (a status shows as an image and a
          title), and none of them is answered any more; on a loaded machine the ticks thread
          starts showing a status just before the loop notices, and then never reads Quit. So
          while fn waits on a loop that is over, its waits are answered here.
        """
        icon = self._loop_icon
        if icon is None:
            return  # no loop to call into: run() shows the state again with the next icon
        if getattr(icon, "_display", None) is None:
            call_on_gui_thread(lambda: fn(icon))
            return
        done = threading.Event()

        def nudge() -> None:
            while not done.wait(NUDGE_SECONDS):
                _flush_xorg(icon)
                if self._loop_icon is not icon:  # its loop has ended: nobody else will answer
                    icon._queue.put(True)

        nudger = threading.Thread(target=nudge, name="naiup-tray-nudge", daemon=True)
        nudger.start()
        try:
            call_on_gui_thread(lambda: fn(icon))
        finally:
            done.set()
            nudger.join()

    def _poll_status(self) -> None:
        try:
            reply = self._request("status")
            if reply is not None:
                self.apply_status(Status.from_json(reply))
        except (NaiupError, OSError, EOFError) as exc:
            log.debug("status poll failed err=%s", exc)

    def _read_actions(self) -> None:
        if self._actions is None:
            return
        for verb, arg in self._actions.read():
            try:
                self.trigger(verb, arg)
            except ValueError:
                log.warning("unknown tray action in actions file action=%s", verb)


def _flush_xorg(icon: Any) -> None:
    # pystray's xorg stop destroys its window from the loop thread, but python-xlib can leave that
    # request unsent while this thread held the socket's send role (seen on Xvfb: the loop then
    # waits forever for DestroyNotify). A flush from here sends whatever is still queued.
    display = getattr(icon, "_display", None)
    if display is None:
        return
    try:
        display.flush()
    except Exception as exc:  # the loop may have closed the display already: nothing to do
        log.debug("xorg flush err=%s", exc)


def _close_quietly(client: Client) -> None:
    try:
        client.close()
    except (OSError, EOFError, NaiupError) as exc:
        log.debug("closing control client err=%s", exc)


def _open_compare(image: str) -> None:
    from naiup.review import open_compare

    open_compare(Path(image))


def _open_gallery() -> None:
    from naiup.review import open_gallery

    open_gallery()


def _recent_results() -> list[str]:
    from naiup.review import recent_outputs

    return recent_outputs(tray_menu.RECENT_LIMIT)
