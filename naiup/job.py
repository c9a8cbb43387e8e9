"""One job: one file in -> one file out. Shared by `naiup refine` and the daemon's worker.

CONTRACT (filled in by the engine-core issue):
    run_job(src: Path, preset: Preset, engine: ImageEngine, config: Config,
            progress: Callable[[float, str], None] | None = None) -> JobResult
        reads src (read_image), refuses outputs over config.output.max_output_megapixels before model
        work, calls engine.process, publishes beside src atomically (never overwrites; " (2)" on
        collision), carries NAI text chunks, adds `naiup` provenance + A1111 `parameters` chunks.
    is_naiup_output(path: Path) -> bool     # provenance chunk present (so the daemon never re-queues)

    class ImageEngine(Protocol):
        def process(self, image: Image.Image, meta: ImageMetadata, preset: Preset, *,
                    progress: Callable[[float, str], None] | None = None) -> EngineResult
    EngineResult(image: Image.Image, seed: int | None, parameters: dict, timings: dict[str, float])
    JobResult(src: Path, output: Path, seed: int | None, timings: dict[str, float])
"""

# PLACEHOLDER (daemon branch): minimal job path until the engine-core issue lands; same signatures.

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from PIL import Image, PngImagePlugin

from naiup.config import Config, Preset
from naiup.engine.metadata import ImageMetadata, read_image
from naiup.errors import OutputError

PROVENANCE_KEY = "naiup"


@dataclass(frozen=True, slots=True)
class EngineResult:
    image: Image.Image
    seed: int | None = None
    parameters: dict = None  # type: ignore[assignment]
    timings: dict[str, float] = None  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class JobResult:
    src: Path
    output: Path
    seed: int | None
    timings: dict[str, float]


class ImageEngine(Protocol):
    def process(
        self,
        image: Image.Image,
        meta: ImageMetadata,
        preset: Preset,
        *,
        progress: Callable[[float, str], None] | None = None,
    ) -> EngineResult: ...


def is_naiup_output(path: Path) -> bool:
    try:
        with Image.open(path) as im:
            return PROVENANCE_KEY in im.info
    except Exception:
        return False


def run_job(
    src: Path,
    preset: Preset,
    engine: ImageEngine,
    config: Config,
    progress: Callable[[float, str], None] | None = None,
) -> JobResult:
    image, meta = read_image(src)
    result = engine.process(image, meta, preset, progress=progress)
    info = PngImagePlugin.PngInfo()
    for key, value in meta.text_chunks.items():
        info.add_text(key, value)
    info.add_text(PROVENANCE_KEY, json.dumps({"preset": preset.name, "src": src.name}))
    name = config.output.name.format(stem=src.stem, preset=preset.name)
    tmp = src.with_name(f".{name}.naiup-tmp")
    try:
        with open(tmp, "xb") as f:
            result.image.save(f, "PNG", pnginfo=info, compress_level=config.output.png_compress_level)
            f.flush()
            os.fsync(f.fileno())
        for n in range(1, 1000):
            final = src.with_name(name) if n == 1 else src.with_name(f"{Path(name).stem} ({n}).png")
            try:
                os.link(tmp, final)  # never clobber: link fails if the name exists
                break
            except FileExistsError:
                continue
        else:
            raise OutputError(f"{src}: no free output name beside it")
    except OSError as exc:
        raise OutputError(f"{src}: cannot write output: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return JobResult(src=src, output=final, seed=result.seed, timings=result.timings or {})
