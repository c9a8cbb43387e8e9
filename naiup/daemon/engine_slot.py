"""The worker's one loaded model set: the engine for the preset at hand, switching sets when it must.

One config may hold several model sets ([model] and [models.NAME]), each a few GB of weights; a worker
holds one at a time. Switching to a preset of another set unloads the old engine first, so the two
never share the card, then loads the new one and logs how long that took. A preset of the same set
keeps the engine (its upscaler, if different, loads on first use: well under a second). A preset that
does not refine needs no SD model, so it runs on whatever engine is loaded.

Runs in the worker child only: the daemon process never imports an engine (nor torch).
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable

from naiup.config import Config, ModelConfig, Preset

log = logging.getLogger(__name__)

EngineFactory = Callable[[ModelConfig], object]  # daemon.engine: "module:callable" called with the set


class EngineSlot:
    def __init__(self, factory: EngineFactory) -> None:
        self._factory = factory
        self._engine: object | None = None
        self.model: ModelConfig | None = None  # the set the engine was built with (None: none yet)
        self.name: str | None = None  # its name, for the log

    @property
    def current(self) -> object | None:
        """The engine loaded now, if any."""
        return self._engine

    def engine_for(self, config: Config, preset: Preset, *, load: bool = False) -> object:
        """The engine that runs `preset` under `config`, built (and loaded) when the loaded one is of
        another set. `load`: also load what the preset needs now (its upscaler, and its SD models when
        it refines), not at its first job. ConfigError when the preset's set is not filled in."""
        if preset.refine or self._engine is None:
            model = config.model_for(preset)
            if self._engine is None or model != self.model:
                self._switch(model, preset, load)
                return self._engine
        if load:
            _load(self._engine, preset)
        return self._engine

    def _switch(self, model: ModelConfig, preset: Preset, load: bool) -> None:
        if self._engine is not None:
            self.unload()
        t0 = time.perf_counter()
        engine = self._factory(model)
        if load or preset.refine:  # a refining job would load the SD models in its first step anyway
            _load(engine, preset)
        self._engine, self.model, self.name = engine, model, preset.model
        what = "loaded" if preset.refine else "ready (upscale only: no SD model loaded)"
        log.info(
            "model set %s name=%s checkpoint=%s secs=%.1f",
            what,
            preset.model,
            model.checkpoint,
            time.perf_counter() - t0,
        )

    def unload(self) -> None:
        """Drop the engine and give its memory back before anything else is loaded."""
        if self._engine is None:
            return
        unload = getattr(self._engine, "unload", None)
        if callable(unload):
            unload()  # naiup's Engine drops its models and empties the accelerator's cache
        self._engine, self.model, name = None, None, self.name
        # Reference cycles (modules, hooks, compiled graphs) would keep the old weights alive until
        # some later collection; the new set must not load beside them.
        gc.collect()
        log.info("model set unloaded name=%s", name)


def _load(engine: object, preset: Preset) -> None:
    load = getattr(engine, "load", None)  # stand-in engines may load lazily, or not at all
    if callable(load):
        load(preset)
