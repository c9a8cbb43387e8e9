"""What the engine reports for one image: progress on the way, the result at the end. Kept free of
torch so job.py and the daemon import it cheaply."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

# progress(fraction of the job done, 0..1, stage label): every stage of the engine takes one.
Progress = Callable[[float, str], None]


@dataclass(frozen=True, slots=True)
class EngineResult:
    image: Image.Image  # RGB, exactly round(w*scale) x round(h*scale)
    seed: int | None  # the seed the refiner used; None when nothing was random (upscale only)
    parameters: dict[str, Any] = field(default_factory=dict)  # goes into the provenance chunk
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
