"""The stand-in engine of daemon tests, imported by the spawned worker child (on its PYTHONPATH).

The daemon fixture names it in NAIUP_ENGINE ("stub_engine:ResizeEngine"). `ResizeEngine.process` is
Image.resize. NAIUP_STUB_DELAY in the daemon's environment (the worker inherits it) makes each job take
that long. The image's prompt picks a failure: "crash" exits the worker mid-job; "hang" hangs the first
time (marker file in the state dir), then works; "chatty" never ends but reports progress all along;
"oom" runs out of GPU memory (worth retrying); "nan" produces garbage (not worth retrying); "too-big"
is a preset whose tiles do not fit the card beside an SDXL set that loads (the engine's own refusal,
residency.plan_residency, for a 4 GiB card: that job fails, the set stays loaded). A [model]
checkpoint named BROKEN cannot load (as a missing model file). `idle()` appends a line to `idle-calls`
in the state dir. NAIUP_STUB_HUB_REPO makes `load()` download that hub repo's
pytorch_lora_weights.safetensors through naiup's own hub client (the test serves it at HF_ENDPOINT),
reporting the bytes to `report_downloads`' callback, as the real Engine does on a hub model's first run.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from naiup.config import ModelConfig, Preset
from naiup.errors import EngineError, ModelLoadError, OutOfMemoryError
from naiup.job import EngineResult

BROKEN = "stub-model.safetensors"


class ResizeEngine:
    def __init__(self, model: ModelConfig, device: object = None) -> None:
        self.model = model
        self._on_download = None

    def report_downloads(self, callback) -> None:  # type: ignore[no-untyped-def]
        self._on_download = callback

    def load(self, preset: Preset) -> None:
        if Path(self.model.checkpoint).name == BROKEN:
            raise ModelLoadError(self.model.checkpoint, "file not found (stand-in engine that cannot load)")
        repo = os.environ.get("NAIUP_STUB_HUB_REPO")
        if repo:
            self.download(repo)

    def download(self, repo: str) -> None:
        """The hub repo's weights file through naiup's own hub client, bytes to report_downloads'."""
        from naiup.engine.models.hub import fetch_file

        fetch_file(repo, "pytorch_lora_weights.safetensors", self._on_download)

    def model_id(self, preset: Preset) -> str:
        m = self.model
        return "|".join((m.checkpoint, m.vae, m.lcm_lora))

    def process(self, image, meta, preset, *, progress=None):  # type: ignore[no-untyped-def]
        prompt = meta.text_chunks.get("Description", "")
        if prompt == "crash":
            os._exit(7)
        if prompt == "oom":
            raise OutOfMemoryError("out of CUDA memory even one diffusion tile at a time (stand-in)")
        if prompt == "nan":
            raise EngineError("latent contains NaN/Inf (stand-in)")
        if prompt == "too-big":
            _refuse_preset(preset)
        marker = Path(os.environ.get("NAIUP_STATE_DIR", ".")) / "hung-once"
        if prompt == "hang" and not marker.exists():
            marker.touch()
            time.sleep(3600)
        while prompt == "chatty":  # never done, yet never quiet
            if progress:
                progress(0.5, "chatting")
            time.sleep(0.02)
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

    def unload(self) -> None:
        pass


def _refuse_preset(preset: Preset) -> None:
    """What the Refiner raises at job start for a preset too large for the card (imported here:
    torch is only paid for by the job that asks)."""
    from naiup.engine.models.residency import ModelSizes, plan_residency, unet_working_bytes

    sizes = ModelSizes(unet=5_134_927_368, text_encoders=1_635_441_872, vae=167_307_726, family="sdxl")
    card = 4 * 2**30
    working = unet_working_bytes(preset.tile_size**2, preset.cfg > 1.0)
    plan_residency(sizes, working, card, card, preset.tile_size, BROKEN, preset=preset)
    raise AssertionError("a 4 GiB card was given room for an SDXL set")
