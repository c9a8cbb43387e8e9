"""A stand-in engine that says which model set it was built with, for the model-set switching tests.

Each build, load and unload appends a line to `engine-events` in the state dir ("build <checkpoint>",
"load <checkpoint> <preset>", "unload <checkpoint>"), so a test sees what the worker did and in which
order; `model_id` is the checkpoint's name, so the ledger shows which set made each output.
NAIUP_SET_HUB_REPO="<checkpoint name>=<owner/name>": loading that set downloads the hub repo's weights
(stub_engine's download, served by the test at HF_ENDPOINT), as a set's first run would.
"""

from __future__ import annotations

import os
from pathlib import Path

from stub_engine import ResizeEngine


def _event(line: str) -> None:
    with (Path(os.environ.get("NAIUP_STATE_DIR", ".")) / "engine-events").open("a") as f:
        f.write(line + "\n")


class SetEngine(ResizeEngine):
    def __init__(self, model, device=None) -> None:  # type: ignore[no-untyped-def]
        super().__init__(model, device)
        _event(f"build {Path(model.checkpoint).name}")

    def load(self, preset) -> None:  # type: ignore[no-untyped-def]
        name = Path(self.model.checkpoint).name
        _event(f"load {name} {preset.name}")
        downloads_for, _, repo = os.environ.get("NAIUP_SET_HUB_REPO", "").partition("=")
        if downloads_for == name:
            self.download(repo)

    def unload(self) -> None:
        _event(f"unload {Path(self.model.checkpoint).name}")

    def model_id(self, preset) -> str:  # type: ignore[no-untyped-def]
        return Path(self.model.checkpoint).name


def events(state_dir: Path) -> list[str]:
    path = state_dir / "engine-events"
    return path.read_text().splitlines() if path.exists() else []
