"""naiup's real Engine for daemon tests with tiny single-file checkpoints.

A single file is loaded with the configs of the `skeleton` folder written beside it (tiny_sd and
tiny_sdxl write one next to their files) instead of the bundled full-size ones, as the engine tests
pass `config_dir`. Everything else is the engine the service runs: the worker calls this factory
(`[daemon] engine = "tiny_engine:TinyEngine"`) with each model set, like naiup.engine:Engine.
"""

from __future__ import annotations

from pathlib import Path

import torch

from naiup.config import ModelConfig
from naiup.engine import Engine
from naiup.engine.diffusion.refine import Refiner


def _refiner(model: ModelConfig, device: torch.device) -> Refiner:
    checkpoint = Path(model.checkpoint)
    return Refiner(model, device, config_dir=checkpoint.parent / "skeleton" if checkpoint.is_file() else None)


def TinyEngine(model: ModelConfig) -> Engine:
    return Engine(model, refiner_factory=_refiner)
