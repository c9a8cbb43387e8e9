"""The worker pipe's messages: frozen dataclasses of plain values, the same after the pipe's pickle."""

from __future__ import annotations

import dataclasses
import pickle

from naiup.config import BUILTIN_PRESETS, Config, ModelConfig
from naiup.daemon import worker_messages as m

PRESET = BUILTIN_PRESETS["upscale-2x"]


def test_every_message_is_frozen_plain_data_that_survives_the_pipe():
    samples = [
        m.Job("a.png", PRESET, Config()),
        m.LoadSet(PRESET, Config()),
        m.ModelIdOf(PRESET),
        m.Stop(),
        m.Log(20, "naiup.job", "job done"),
        m.Progress(0.5, "refine"),
        m.Download("owner/model", 1_000, 2_000),
        m.SetLoaded(ModelConfig(checkpoint="/models/xl.safetensors")),
        m.SetLoaded(None),
        m.Ready(),
        m.LoadFailed("m.safetensors: file not found"),
        m.ModelId("lanczos+tiny-0123"),
        m.Done("a.naiup.png", "lanczos", {"total": 1.0}),
        m.Failed("a.png: no such file", permanent=True),
    ]
    for msg in samples:
        assert dataclasses.is_dataclass(msg) and type(msg).__dataclass_params__.frozen
        assert pickle.loads(pickle.dumps(msg)) == msg
    # Each worker -> daemon message is either a notice (the wait goes on) or a reply (it ends).
    for msg in samples[4:]:
        assert isinstance(msg, m.Notice) != isinstance(msg, m.Reply)
