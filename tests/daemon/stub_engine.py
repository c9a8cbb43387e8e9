"""Stand-in engines for daemon tests, imported by the spawned worker child (on its PYTHONPATH).

`ResizeEngine.process` is Image.resize. NAIUP_STUB_DELAY in the daemon's environment (the worker
inherits it) makes each job take that long. The image's prompt picks a failure: "crash" exits the worker
mid-job; "hang" hangs the first time (marker file in the state dir), then works; "oom" runs out of GPU
memory (worth retrying); "nan" produces garbage (not worth retrying). `idle()` appends a line to
`idle-calls` in the state dir.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from naiup.errors import EngineError, ModelLoadError, OutOfMemoryError
from naiup.job import EngineResult


class ResizeEngine:
    def __init__(self, model: object, device: object = None) -> None:
        self.model = model

    def process(self, image, meta, preset, *, progress=None):  # type: ignore[no-untyped-def]
        prompt = meta.text_chunks.get("Description", "")
        if prompt == "crash":
            os._exit(7)
        if prompt == "oom":
            raise OutOfMemoryError("out of CUDA memory even one diffusion tile at a time (stand-in)")
        if prompt == "nan":
            raise EngineError("latent contains NaN/Inf (stand-in)")
        marker = Path(os.environ.get("NAIUP_STATE_DIR", ".")) / "hung-once"
        if prompt == "hang" and not marker.exists():
            marker.touch()
            time.sleep(3600)
        delay = float(os.environ.get("NAIUP_STUB_DELAY", "0"))
        if progress:
            progress(0.5, "resizing")
        time.sleep(delay)
        w, h = image.size
        return EngineResult(
            image.convert("RGB").resize((round(w * preset.scale), round(h * preset.scale))),
            seed=1,
            parameters={},
            timings={"resize": 0.0},
        )

    def idle(self) -> None:
        """The worker's "queue went idle" hook: counted in a file the test can read."""
        with (Path(os.environ.get("NAIUP_STATE_DIR", ".")) / "idle-calls").open("a") as f:
            f.write("idle\n")


class BrokenEngine:
    def __init__(self, model: object, device: object = None) -> None:
        raise ModelLoadError("stub-model.safetensors", "file not found (stand-in engine that cannot load)")


class DownloadingEngine(ResizeEngine):
    """Loads by downloading one file of the hub repo NAIUP_STUB_HUB_REPO through naiup's own hub client
    (the test serves it: HF_ENDPOINT), reporting the bytes to whoever asked with report_downloads, as
    the real Engine does with a hub model's first run."""

    def __init__(self, model: object, device: object = None) -> None:
        super().__init__(model, device)
        self._on_download = None

    def report_downloads(self, callback) -> None:  # type: ignore[no-untyped-def]
        self._on_download = callback

    def load(self, preset: object) -> None:
        from naiup.engine.models.hub import fetch_file

        fetch_file(os.environ["NAIUP_STUB_HUB_REPO"], "pytorch_lora_weights.safetensors", self._on_download)
