"""The control socket: permissions, authentication, JSON only, single instance, CLI exit codes."""

from __future__ import annotations

import json
import os
import socket
import stat
import threading
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client
from pathlib import Path

import nai_writer
import pytest
from daemon_harness import DaemonRun, wait_for

from naiup.cli.main import main
from naiup.control.client import ControlClient
from naiup.control.protocol import ControlError, address, create_token, token_path


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.skipif(os.name == "nt", reason="POSIX permissions")
def test_socket_and_token_are_private_and_a_wrong_authkey_is_refused(daemon: DaemonRun):
    daemon.write_config(watch="quiet_seconds = 0.2")
    daemon.start()
    sock = Path(address())
    assert _mode(sock.parent) == 0o700 and _mode(sock) == 0o600 and stat.S_ISSOCK(sock.stat().st_mode)
    assert _mode(token_path()) == 0o600 and _mode(token_path().parent) == 0o700

    with pytest.raises(AuthenticationError):
        Client(str(sock), authkey=b"0" * 64)
    raw = Client(str(sock), authkey=token_path().read_bytes().strip())
    raw.send_bytes(b"\x80\x04not json, perhaps a pickle")  # never unpickled: the connection is dropped
    with pytest.raises(EOFError):
        raw.recv_bytes()
    raw.close()

    with ControlClient.connect() as client:  # still serving after both
        assert client.request("ping")["pid"] == daemon.proc.pid
        with pytest.raises(ControlError, match="unknown verb"):
            client.request("format_disk")
        for internal in ("_init__", "d", "handle"):  # names of the dispatcher's own insides
            with pytest.raises(ControlError, match="unknown verb"):
                client.request(internal, daemon=None)
        assert client.request("status")["state"]  # the dispatcher still has its daemon
        with pytest.raises(ControlError, match="bad arguments"):
            client.request("preset", nom="x")
    assert daemon.stop() == 0


def test_second_instance_refused_cli_reports_not_running_and_events_stream(daemon: DaemonRun):
    down = daemon.cli("status")
    assert down.returncode == 3 and "not running" in down.stderr
    daemon.write_config(watch="quiet_seconds = 0.2")
    daemon.start()

    second = daemon.cli("--config", str(daemon.config_path), "run")
    assert second.returncode != 0 and f"already running (pid {daemon.proc.pid})" in second.stderr

    events: list[dict] = []
    client = ControlClient.connect()
    stream = client.subscribe()
    first = next(stream)
    assert first["event"] == "status" and first["status"]["state"] == "idle"

    def read() -> None:
        for event in stream:
            events.append(event)

    reader = threading.Thread(target=read)
    reader.start()
    nai_writer.write_nai_png(daemon.watch / "a.png", (16, 16))
    wait_for(lambda: any(e["event"] == "job_done" for e in events), 20, "a job_done event")
    done = next(e for e in events if e["event"] == "job_done")
    assert done["path"] == str(daemon.watch / "a.png") and Path(done["output"]).exists()

    # The tray shares one client between its menu (GUI thread) and its status poll: each caller must
    # get the reply to its own request, never another thread's or half of one.
    mixups: list[str] = []

    def hammer(verb: str, key: str) -> None:
        try:
            for _ in range(100):
                if key not in client.request(verb):
                    mixups.append(verb)
        except Exception as exc:  # a torn frame: the test's finding, reported below
            mixups.append(f"{verb}: {type(exc).__name__}: {exc}")

    hammers = [
        threading.Thread(target=hammer, args=vk) for vk in [("ping", "version"), ("queue", "items")] * 2
    ]
    for t in hammers:
        t.start()
    for t in hammers:
        t.join(60)
    assert mixups == []

    status = daemon.cli("status")
    assert status.returncode == 0 and "idle" in status.stdout and "done 1" in status.stdout
    as_json = json.loads(daemon.cli("status", "--json").stdout)
    assert as_json["counts"]["done"] == 1 and as_json["log_path"].endswith("daemon.log")
    assert daemon.cli("rescan").returncode == 0
    stopped = daemon.cli("stop")
    assert stopped.returncode == 0
    reader.join(20)  # the stream ends when the daemon stops
    assert not reader.is_alive()
    client.close()
    assert daemon.proc.wait(20) == 0
    daemon.proc = None
    assert daemon.cli("queue").returncode == 3


@pytest.mark.skipif(os.name == "nt", reason="POSIX permissions")
def test_an_empty_or_readable_token_is_replaced_by_a_fresh_private_one(tmp_path, monkeypatch):
    monkeypatch.setenv("NAIUP_STATE_DIR", str(tmp_path / "state"))
    key = create_token()
    assert len(key) == 64 and token_path().read_bytes().strip() == key and _mode(token_path()) == 0o600
    assert create_token() == key  # reused across restarts

    # A crash between creating the file and writing it leaves it empty: an empty authkey is no key.
    token_path().write_bytes(b"")
    fresh = create_token()
    assert len(fresh) == 64 and token_path().read_bytes().strip() == fresh

    os.chmod(token_path(), 0o644)
    replaced = create_token()
    assert replaced != fresh and len(replaced) == 64 and _mode(token_path()) == 0o600


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX") or os.name == "nt", reason="unix sockets")
def test_stale_socket_after_a_kill_reads_as_not_running_with_the_documented_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # What `kill -9` of the daemon leaves: the socket file and the token, but nobody listening on it.
    for name in ("CONFIG", "STATE", "RUNTIME", "LOG", "CACHE"):
        monkeypatch.setenv(f"NAIUP_{name}_DIR", str(tmp_path / name.lower()))
    create_token()
    Path(address()).parent.mkdir(parents=True, exist_ok=True)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(address())
    stale.close()  # the file stays; a connect is now refused
    assert main(["status"]) == 3
    documented = "naiup: the naiup daemon is not running (start it with naiup run)"
    assert capsys.readouterr().err.strip() == documented
