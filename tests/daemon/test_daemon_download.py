"""A hub model's first download, seen from the service: `naiup status` shows it (bytes of total) while
the worker loads, and it is gone once the model is in."""

from __future__ import annotations

from daemon_harness import DaemonRun, wait_for
from hub_server import FakeHub

from naiup.daemon.worker import download_reporter
from naiup.daemon.worker_messages import Download

REPO_ID = "someone/big-model"


def test_status_shows_the_download_while_the_worker_loads_and_clears_it_after(daemon: DaemonRun, tmp_path):
    data = bytes(range(256)) * (128 * 1024)  # 32 MiB: hub chunks of 10 MB, so it reports mid-way
    # A slow link (≈ 2 s for the file), so that the download is there to be seen.
    with FakeHub({REPO_ID: {"pytorch_lora_weights.safetensors": data}}, chunk=2**20, delay=0.06) as hub:
        env = {"HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_HUB_CACHE": str(tmp_path / "hf"),
               "NAIUP_STUB_HUB_REPO": REPO_ID}  # fmt: skip
        daemon.start(extra_env=env, wait_worker=False)
        seen = wait_for(
            lambda: (s := daemon.status())["download"] and s["download"]["done"] > 0 and s, 60, "a download"
        )
        assert seen["state"] == "loading"
        assert seen["download"]["name"] == REPO_ID
        assert seen["download"]["total"] == len(data) and 0 < seen["download"]["done"] < len(data)
        wait_for(lambda: daemon.status()["state"] == "idle", 60, "the worker to finish loading")
        assert daemon.status()["download"] is None
        assert hub.fetched == [f"{REPO_ID}:pytorch_lora_weights.safetensors"]
        assert daemon.stop() == 0  # inside the server's block: its connection threads end with the worker


def test_the_worker_reports_downloads_at_most_twice_a_second_and_always_the_end():
    sent: list[Download] = []
    now = [0.0]
    report = download_reporter(sent.append, clock=lambda: now[0])
    for done, t in ((0, 0.0), (10, 0.1), (20, 0.2), (30, 0.6), (40, 0.7), (100, 0.75)):
        now[0] = t
        report(done, 100, "r")
    assert [m.done for m in sent] == [0, 30, 100]
    assert sent[0] == Download("r", 0, 100)


def test_naiup_status_and_the_tray_tooltip_show_the_download_in_bytes_of_total(capsys):
    from tray_standin import default_status

    from naiup.cli.daemon_cmds import print_status
    from naiup.control.protocol import Status
    from naiup.tray.menu import IconState, TrayState, icon_state, tooltip

    download = {"name": REPO_ID, "done": 1_234_000_000, "total": 6_940_000_000}
    s = Status.from_json({**default_status(), "state": "loading", "download": download})
    print_status(s)
    assert f"  downloading model {REPO_ID}: 1.2 of 6.9 GB (18%)\n" in capsys.readouterr().out
    assert tooltip(TrayState(s)) == f"naiup: downloading model 1.2 of 6.9 GB (18%) · {REPO_ID}"
    assert icon_state(TrayState(s)) is IconState.WORKING
    print_status(Status.from_json({**default_status(), "state": "loading"}))
    assert "downloading" not in capsys.readouterr().out


def test_naiup_refine_draws_the_download_as_its_own_bar_and_clears_it_when_complete():
    import io

    from naiup.cli.progress_bar import DownloadBar

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Tty()
    bar = DownloadBar(out)
    bar(0, 4_000_000_000, REPO_ID)
    bar(4_000_000_000, 4_000_000_000, REPO_ID)
    text = out.getvalue()
    assert f"download {REPO_ID} [" in text and "0.0 of 4.0 GB (0%)" in text and "4.0 of 4.0 GB (100%)" in text
    assert text.endswith("\r\x1b[K")  # cleared: the file's own bar takes the line back
