"""The daemon's side of the pause rules: rule pauses next to the user's pause, and how the two meet.

    gate = RuleGate(config.pause, sensors)
    gate.check(time.monotonic())      # daemon loop, every tick; PauseRules samples every check_seconds
    gate.reason()                     # "on battery" while a rule pauses the queue, else None
    gate.override()                   # the user said `resume`: rules holding now stop pausing

Policy (README "Pause rules"): a rule pause is a soft pause (no new jobs, arrivals still recorded) and
lives only in memory; the runtime state file keeps only the user's own choices. The user's `resume`
wins: every rule holding at that moment is overridden until it clears (after its hysteresis) and
triggers again. A rule that was not holding at the resume still pauses when it triggers.

`sensors_from_env` is the test seam for a daemon in its own process: NAIUP_PAUSE_SENSORS (naiup.seams)
names a callable taking the own-pids callable and returning a Sensors.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from naiup import seams
from naiup.config import PauseConfig
from naiup.daemon.pause_rules import PauseRules, Sensors, SystemSensors

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RulesStatus:
    """What the rules add to the daemon's status."""

    holding: str | None  # the reason of a rule pausing now
    overridden: str | None  # a rule holding that the user resumed over
    unavailable: dict[str, str]  # rule -> why it cannot be checked here


def sensors_from_env(own_pids: Callable[[], Iterable[int]]) -> Sensors:
    factory = seams.optional_factory(seams.PAUSE_SENSORS)
    return SystemSensors(own_pids=own_pids) if factory is None else factory(own_pids)


class RuleGate:
    """Thread-safe: the daemon loop checks, control threads override, the scheduler and status read."""

    def __init__(self, config: PauseConfig, sensors: Sensors) -> None:
        self._rules = PauseRules(config, sensors)
        # Two locks: sensor reads (NVML's first init can take a while) never block a status reply.
        self._rules_lock = threading.Lock()  # PauseRules: the loop checks, a reload reconfigures
        self._lock = threading.Lock()  # the fields below
        self._engaged: dict[str, str] = {}  # rule name -> reason, as of the last check
        self._overridden: set[str] = set()  # rules the user resumed over; forgotten once they clear
        self._unavailable: dict[str, str] = {}
        self._failing = False

    def reconfigure(self, config: PauseConfig) -> None:
        with self._rules_lock:
            self._rules.reconfigure(config)

    def check(self, now: float) -> None:
        with self._rules_lock:
            try:
                self._rules.evaluate(now)
            except Exception as exc:  # a sensor library failing must never stop the daemon loop
                if not self._failing:
                    log.warning("pause rules could not be checked, keeping the last answer error=%s", exc)
                self._failing = True
                return
            self._failing = False
            engaged, unavailable = self._rules.engaged(), self._rules.unavailable()
        with self._lock:
            before = self._reason_locked()
            self._engaged, self._unavailable = engaged, unavailable
            self._overridden &= set(engaged)  # cleared rules: the override is spent
            after = self._reason_locked()
        if after != before:
            log.info("pause rule %s", f"pauses the queue reason={after}" if after else "released")

    def override(self) -> None:
        with self._lock:
            self._overridden |= set(self._engaged)
            if self._overridden:
                log.info("user resumed over pause rules rules=%s", sorted(self._overridden))

    def reason(self) -> str | None:
        with self._lock:
            return self._reason_locked()

    def _reason_locked(self) -> str | None:
        return next((r for n, r in self._engaged.items() if n not in self._overridden), None)

    def status(self) -> RulesStatus:
        with self._lock:
            return RulesStatus(
                holding=self._reason_locked(),
                overridden=next((r for n, r in self._engaged.items() if n in self._overridden), None),
                unavailable=dict(self._unavailable),
            )
