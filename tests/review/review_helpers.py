"""Review-page helpers: a real NovelAI image and a naiup output of it made by the real job code.

The output comes from `run_job` with the `upscale-2x` preset and a stand-in engine that enlarges 2x
(nearest) and inverts the colours: the file, its name and its provenance chunk are exactly what naiup
writes, and every pixel differs visibly from the original's, so a screenshot tells the two apart.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

from naiup.config import load_config
from naiup.daemon.ledger import Ledger, State
from naiup.job import EngineResult, run_job

# A folder and file name with what URLs get wrong: spaces, "#", "%" and non-ASCII letters.
AWKWARD_DIR = "dl #1 100% ñ 日本"
AWKWARD_NAME = "aris #2 50% é.png"
FIXTURE = "nai3_640_text_stealth.png"  # 640x640 NovelAI V3, text chunks + stealth alpha


class InvertEngine:
    def load(self, preset) -> None:  # type: ignore[no-untyped-def]
        pass

    def model_id(self, preset) -> str:  # type: ignore[no-untyped-def]
        return "realcugan-2x-conservative"

    def idle(self) -> None:
        pass

    def unload(self) -> None:
        pass

    def report_downloads(self, callback) -> None:  # type: ignore[no-untyped-def]
        pass  # it never downloads

    def process(self, image, meta, preset, *, progress=None):  # type: ignore[no-untyped-def]
        w, h = image.size
        big = image.convert("RGB").resize((round(w * preset.scale), round(h * preset.scale)), Image.NEAREST)
        params = {
            "scale": preset.scale,
            "upscaler": preset.upscaler,
            "upscaler_id": "realcugan-2x-conservative",
            "refine": preset.refine,
            "size": f"{big.width}x{big.height}",
        }
        return EngineResult(ImageOps.invert(big), seed=None, parameters=params, timings={})


@dataclass
class Made:
    source: Path
    output: Path


def make_output(source: Path, preset: str = "upscale-2x") -> Path:
    config = load_config(source.parent / "no-config.toml")
    return run_job(source, config.preset(preset), InvertEngine(), config).output


def make_pair(folder: Path, fixtures: Path, name: str = AWKWARD_NAME, fixture: str = FIXTURE) -> Made:
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / name
    shutil.copyfile(fixtures / fixture, source)
    return Made(source, make_output(source))


# The daemon stamps rows with time.time(); tests that sort or filter by time set the stamps directly.
def record_done(ledger: Ledger, source: Path, output: Path, finished: float | None = None) -> None:
    """What the daemon writes for a finished job (upsert, start, finish), at a chosen time."""
    item = ledger.upsert(source, State.QUEUED, size=1, mtime_ns=1, hash="h")
    ledger.start(item.id, "upscale-2x", "realcugan-2x-conservative")
    ledger.finish(item.id, str(output))
    if finished is not None:
        ledger._exec("UPDATE items SET started=?, finished=? WHERE id=?", (finished - 2.5, finished, item.id))


def record_failed(ledger: Ledger, source: Path, error: str, finished: float | None = None) -> None:
    item = ledger.upsert(source, State.QUEUED, size=1, mtime_ns=1, hash="f")
    ledger.fail(item.id, error)
    if finished is not None:
        ledger._exec("UPDATE items SET finished=? WHERE id=?", (finished, item.id))
