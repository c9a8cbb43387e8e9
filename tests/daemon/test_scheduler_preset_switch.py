"""A preset chosen while the engine loads takes effect at once: the load it made moot is cancelled, a
load that fails after the choice is not waited out for LOAD_RETRY, and the error shown is the chosen
preset's. The scheduler runs for real; its Worker is a stand-in whose load waits for the test."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from daemon_harness import wait_for

from naiup.config import Config, Preset
from naiup.daemon import scheduler as scheduler_module
from naiup.daemon.ledger import Ledger
from naiup.daemon.scheduler import LOAD_RETRY, Scheduler
from naiup.runtime_state import RuntimeState

SD_ERROR = "stub-model.safetensors: file not found"


class _LoadingWorker:
    """Loading a refining preset's SD model lasts until the test releases it, then fails (as with a
    missing model file), or until it is cancelled; an upscale-only preset loads at once."""

    started: ClassVar[list[_LoadingWorker]] = []
    release: ClassVar[threading.Event] = threading.Event()

    def __init__(self, config: Config, preset: Preset | None = None, on_download: object = None) -> None:
        self.preset, self.model_set, self.result = preset, None, ""
        self._alive = False
        _LoadingWorker.started.append(self)

    pid = None

    def alive(self) -> bool:
        return self._alive

    def start(self, cancelled: Callable[[], bool]) -> str | None:
        assert self.preset is not None
        if self.preset.refine:
            while not cancelled() and not self.release.is_set():
                time.sleep(0.01)
            self.result = "cancelled" if cancelled() else SD_ERROR
            return self.result
        self._alive, self.result = True, "ready"
        return None

    def stop(self) -> None:
        self._alive = False


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Scheduler, list[RuntimeState]]]:
    monkeypatch.setattr(scheduler_module, "Worker", _LoadingWorker)
    _LoadingWorker.started = []
    _LoadingWorker.release = threading.Event()
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    chosen = [RuntimeState(active_preset="refine-2x")]  # what `naiup preset` wrote last
    scheduler = Scheduler(ledger, Config, lambda: chosen[0], lambda _event: None)
    scheduler.start()
    try:
        yield scheduler, chosen
    finally:
        scheduler.stop()
        ledger.close()


def _choose(scheduler: Scheduler, chosen: list[RuntimeState], name: str) -> None:
    """What Daemon.use_preset does: record the choice, wake the scheduler to load for it."""
    chosen[0] = RuntimeState(active_preset=name)
    scheduler.wake(retry_load=True)


def _loads() -> list[tuple[str, str]]:
    return [(w.preset.name if w.preset else "-", w.result) for w in _LoadingWorker.started]


def test_choosing_an_upscale_preset_while_an_sd_model_loads_cancels_that_load(run):
    scheduler, chosen = run
    wait_for(lambda: scheduler.loading and _LoadingWorker.started, 10, "the SD load to begin")
    _choose(scheduler, chosen, "upscale-2x")
    # Well under LOAD_RETRY: the SD load was dropped, not waited out (nor its failure).
    wait_for(lambda: _loads()[-1] == ("upscale-2x", "ready"), 5, "the upscale preset to load")
    assert _loads() == [("refine-2x", "cancelled"), ("upscale-2x", "ready")]
    assert scheduler.engine_error is None and not scheduler.loading


def test_a_load_failing_after_another_preset_was_chosen_is_tried_again_at_once(run):
    scheduler, chosen = run
    wait_for(lambda: scheduler.loading and _LoadingWorker.started, 10, "the SD load to begin")
    _choose(scheduler, chosen, "refine-4x")  # the same model set: that load is still the one needed
    _LoadingWorker.release.set()  # ...and it fails (the SD model is missing)
    t0 = time.monotonic()
    wait_for(lambda: len(_loads()) == 2 and _loads()[-1][1], 5, "the chosen preset's own load")
    assert time.monotonic() - t0 < LOAD_RETRY / 4
    assert _loads() == [("refine-2x", SD_ERROR), ("refine-4x", SD_ERROR)]
    # Its failure is the chosen preset's error now, and only now does the service wait before a retry.
    wait_for(lambda: scheduler.engine_error == SD_ERROR and not scheduler.loading, 5, "the error")
    time.sleep(0.5)
    assert len(_loads()) == 2


def test_a_preset_choice_drops_the_previous_error_and_reads_as_loading_at_once(run):
    scheduler, chosen = run
    _LoadingWorker.release.set()  # refine-2x fails to load: the service shows its error
    wait_for(lambda: scheduler.engine_error == SD_ERROR and not scheduler.loading, 10, "the error")
    with scheduler._cond:  # no step can begin: what status reads the moment the choice is accepted
        chosen[0] = RuntimeState(active_preset="upscale-2x")
        scheduler.preset_chosen()
        assert scheduler.engine_error is None and scheduler.switching
    wait_for(lambda: _loads()[-1] == ("upscale-2x", "ready"), 5, "the upscale preset to load")
    wait_for(lambda: not scheduler.switching, 5, "the switch to be acted on")
    assert scheduler.engine_error is None
