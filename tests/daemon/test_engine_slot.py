"""EngineSlot: one model set loaded at a time; another set's preset unloads the old one first."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from naiup.config import Config, ModelConfig, Preset
from naiup.daemon.engine_slot import EngineSlot
from naiup.errors import ConfigError

SD = ModelConfig(checkpoint="/m/sd15.safetensors")
XL = ModelConfig(checkpoint="/m/xl.safetensors", lcm_lora="")
PRESETS = {
    "a": Preset(name="a"),
    "b": Preset(name="b", upscaler="lanczos", denoise=0.5),  # same set as a
    "x": Preset(name="x", model="xl"),
    "up": Preset(name="up", refine=False),
}
CONFIG = Config(model=SD, models={"xl": XL}, presets=PRESETS)


class Recorder:
    """A factory whose engines write what happens to them into one shared list; each engine's load
    reports a download of its checkpoint to the callback it was given, as a hub model's first run does."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def __call__(self, model: ModelConfig) -> object:
        events = self.events
        name = model.checkpoint.rsplit("/", 1)[-1]
        events.append(f"build {name}")

        class Engine:
            downloads = None

            def report_downloads(self, callback) -> None:  # type: ignore[no-untyped-def]
                self.downloads = callback

            def load(self, preset: Preset) -> None:
                events.append(f"load {name} {preset.name}")
                if self.downloads is not None:
                    self.downloads(1, 2, name)

            def unload(self) -> None:
                events.append(f"unload {name}")

        return Engine()


def test_presets_of_one_set_share_the_engine_and_another_set_unloads_it_first(caplog):
    made = Recorder()
    slot = EngineSlot(factory=made)
    caplog.set_level(logging.INFO, "naiup.daemon.engine_slot")
    first = slot.engine_for(CONFIG, PRESETS["a"], load=True)
    assert slot.engine_for(CONFIG, PRESETS["b"]) is first  # same set: nothing built, nothing loaded
    assert slot.engine_for(CONFIG, PRESETS["b"], load=True) is first  # asked to: its upscaler loads
    assert made.events == ["build sd15.safetensors", "load sd15.safetensors a", "load sd15.safetensors b"]
    made.events.clear()
    xl = slot.engine_for(CONFIG, PRESETS["x"])
    # The old set is gone before the new one is built: the two never share the card.
    assert made.events == ["unload sd15.safetensors", "build xl.safetensors", "load xl.safetensors x"]
    assert xl is not first and slot.model == XL and slot.current is xl
    logged = [r.getMessage() for r in caplog.records]
    assert "model set unloaded name=default" in logged
    assert any(m.startswith("model set loaded name=xl checkpoint=/m/xl.safetensors secs=") for m in logged)


def test_an_upscale_only_preset_runs_on_whatever_set_is_loaded():
    made = Recorder()
    slot = EngineSlot(factory=made)
    xl = slot.engine_for(CONFIG, PRESETS["x"])
    made.events.clear()
    assert slot.engine_for(CONFIG, PRESETS["up"], load=True) is xl  # no SD model needed: no switch
    assert made.events == ["load xl.safetensors up"]
    fresh = EngineSlot(factory=made)  # nothing loaded yet: built with [model], the SD models not loaded
    made.events.clear()
    fresh.engine_for(CONFIG, PRESETS["up"])
    assert made.events == ["build sd15.safetensors"] and fresh.model == SD


def test_a_changed_set_under_the_same_name_is_loaded_again():
    made = Recorder()
    slot = EngineSlot(factory=made)
    slot.engine_for(CONFIG, PRESETS["x"])
    edited = dataclasses.replace(CONFIG, models={"xl": dataclasses.replace(XL, prediction="v")})
    made.events.clear()
    slot.engine_for(edited, PRESETS["x"])
    assert made.events == ["unload xl.safetensors", "build xl.safetensors", "load xl.safetensors x"]


def test_a_set_not_filled_in_is_refused_and_the_loaded_one_stays():
    made = Recorder()
    slot = EngineSlot(factory=made)
    loaded = slot.engine_for(CONFIG, PRESETS["a"])
    unfilled = dataclasses.replace(CONFIG, models={})
    with pytest.raises(ConfigError, match=r"\[models\.xl\] is not filled in"):
        slot.engine_for(unfilled, PRESETS["x"])
    assert slot.current is loaded and "unload sd15.safetensors" not in made.events


def test_every_set_loaded_reports_its_downloads_a_switch_too():
    made, heard = Recorder(), []
    slot = EngineSlot(factory=made, on_download=lambda done, total, what: heard.append((what, done, total)))
    slot.engine_for(CONFIG, PRESETS["a"], load=True)
    slot.engine_for(CONFIG, PRESETS["x"])  # another set: built and loaded through the same path
    assert heard == [("sd15.safetensors", 1, 2), ("xl.safetensors", 1, 2)]
