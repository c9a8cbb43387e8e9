"""The worker's one loaded model set: the engine for the preset at hand, switching sets when it must.

One config may hold several model sets ([model] and [models.NAME]), each a few GB of weights; a worker
holds one at a time. Switching to a preset of another set unloads the old engine first, so the two
never share the card, then builds and loads the new one and logs how long that took. A preset of the
same set keeps the engine (its upscaler, if different, loads on first use: well under a second). A
preset that does not refine needs no SD model, so it runs on whatever engine is loaded. Every engine
the slot builds, the first one and each switch's, reports its hub downloads to the same callback, so a
set whose models are still to be downloaded shows its bytes arriving in `naiup status` like the first.

Runs in the worker child only: the daemon process never builds an engine (nor imports torch).
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable

from naiup.config import Config, ModelConfig, Preset
from naiup.job import ImageEngine

log = logging.getLogger(__name__)

EngineFactory = Callable[[ModelConfig], ImageEngine]  # naiup.engine:Engine, or NAIUP_ENGINE's stand-in
DownloadReport = Callable[[int, int, str], None]  # (bytes done, bytes total, repo id)


class EngineSlot:
    def __init__(
        self,
        on_switch: Callable[[ModelConfig | None], None] = lambda model: None,
        factory: EngineFactory | None = None,
        on_download: DownloadReport | None = None,
    ) -> None:
        """`on_switch` hears the set after every build and unload; `factory` builds an engine for a
        set (it may be set later, before the first engine_for); `on_download` is given to every engine
        built (ImageEngine.report_downloads) before it loads anything."""
        self.factory = factory
        self._on_switch = on_switch
        self._on_download = on_download
        self._engine: ImageEngine | None = None
        self.model: ModelConfig | None = None  # the set the engine was built with (None: none yet)
        self.name: str | None = None  # its name, for the log

    @property
    def current(self) -> ImageEngine | None:
        """The engine loaded now, if any."""
        return self._engine

    def engine_for(self, config: Config, preset: Preset, *, load: bool = False) -> ImageEngine:
        """The engine that runs `preset` under `config`, built (and loaded) when the loaded one is of
        another set. `load`: also load what the preset needs now (its upscaler, and its SD models when
        it refines), not at its first job. ConfigError when the preset's set is not filled in."""
        if self._engine is None or preset.refine:
            model = config.model_for(preset)
            if self._engine is None or model != self.model:
                return self._switch(model, preset, load)
        if load:
            self._engine.load(preset)
        return self._engine

    def _switch(self, model: ModelConfig, preset: Preset, load: bool) -> ImageEngine:
        assert self.factory is not None, "EngineSlot.factory is set before the first engine_for"
        self.unload()
        t0 = time.perf_counter()
        engine = self.factory(model)
        engine.report_downloads(self._on_download)
        self._engine, self.model, self.name = engine, model, preset.model
        self._on_switch(model)
        if load or preset.refine:  # a refining job would load the SD models in its first step anyway
            engine.load(preset)
        what = "loaded" if preset.refine else "ready (upscale only: no SD model loaded)"
        secs = time.perf_counter() - t0
        log.info("model set %s name=%s checkpoint=%s secs=%.1f", what, preset.model, model.checkpoint, secs)
        return engine

    def unload(self) -> None:
        """Drop the engine and give its memory back before anything else is loaded."""
        if self._engine is None:
            return
        engine, name = self._engine, self.name
        self._engine, self.model, self.name = None, None, None
        self._on_switch(None)
        engine.unload()  # naiup's Engine drops its models and empties the accelerator's cache
        del engine
        # Reference cycles (modules, hooks, compiled graphs) would keep the old weights alive until
        # some later collection; the new set must not load beside them.
        gc.collect()
        log.info("model set unloaded name=%s", name)
