"""Control IPC between the daemon and its clients (CLI, tray).

CONTRACT (daemon issue implements; the tray and CLI use only this module):
    Transport: multiprocessing.connection over AF_UNIX in user_runtime_dir (dir 0700, socket 0600), a
    named pipe on Windows; authkey from a 0600 token file in the state dir; JSON via send_bytes /
    recv_bytes only (never pickle).

    class ControlClient:
        @classmethod connect(cls, timeout: float = 2.0) -> ControlClient   # DaemonNotRunning if none
        request(verb: str, **args) -> dict      # raises ControlError(message) on {"ok": false}
        subscribe() -> Iterator[dict]           # event stream on its own connection
        close()
    class DaemonNotRunning(NaiupError)

    Verbs and replies (all replies carry "ok": bool, and "error": str when not ok):
        ping -> {"ok", "version", "pid"}
        status -> {"ok", "state": "idle"|"working"|"paused"|"loading"|"error",
                   "active_preset": str, "presets": [str], "current": {"path", "progress"} | null,
                   "queue_length": int, "counts": {state: n}, "last_error": str | null,
                   "pause_reason": str | null, "paused_until": float | null,
                   "last_output": str | null, "engine_error": str | null,
                   "watch_folders": [str], "config_path": str | null, "log_path": str}
        queue {failed: bool} -> {"ok", "items": [{"id", "path", "state", "attempts", "error", "output"}]}
        pause {free_gpu: bool, for_seconds: float | null, reason: str | null} -> status
        resume -> status
        preset {name} -> status
        retry {id: int | "all"} -> {"ok", "requeued": n}
        rescan -> {"ok"}   reload -> {"ok"}   stop -> {"ok"}
    Events on subscribe: {"event": "status", "status": {...}} whenever status changes,
        {"event": "job_done", "path", "output"}, {"event": "job_failed", "path", "error"}.
"""
