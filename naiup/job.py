"""One job: one file in -> one file out. Shared by `naiup refine` and the daemon's worker.

run_job(src, preset, engine, config, progress=None) -> JobResult
    1. read the file and its metadata (read_image)
    2. refuse outputs over output.max_output_megapixels, and a folder that takes no new file, before
       any model work
    3. engine.process (pixels in, pixels out)
    4. publish beside src atomically: name from output.name, " (2)" on collision, never overwrite;
       the source's text chunks carried, plus `naiup` provenance and an A1111 `parameters` chunk
is_naiup_output(path) -> bool      # provenance chunk present: the daemon never re-queues outputs
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from PIL import Image

from naiup import __version__
from naiup.config import Config, OutputConfig, Preset
from naiup.engine.result import EngineResult, Progress
from naiup.errors import ConfigError, InputError, OutputError
from naiup.metadata.nai_syntax import image_prompts
from naiup.metadata.read import ImageMetadata, ensure_rgb, read_image, refuse_special_file
from naiup.output.atomic import check_writable, write_first_free
from naiup.output.png import is_png_keyword
from naiup.output.provenance import (
    PARAMETERS_KEY,
    PROVENANCE_KEY,
    a1111_parameters,
    encode_png,
    has_provenance,
    provenance_text,
)
from naiup.pathnames import plain_text

__all__ = ["EngineResult", "ImageEngine", "JobResult", "is_naiup_output", "output_candidates", "run_job"]

log = logging.getLogger(__name__)

_MAX_COLLISIONS = 10_000  # a folder with this many copies is a loop somewhere, not a user


class ImageEngine(Protocol):
    """What runs the model work of a job: naiup.engine.Engine, or a test's stand-in (which must
    implement all of it: callers never probe for a method)."""

    def load(self, preset: Preset) -> None:
        """Load what `preset` needs now (the daemon's worker does at start: a missing model shows as
        an engine error while files stay queued, and the first job starts on a warm model)."""

    def model_id(self, preset: Preset) -> str:
        """Id of the model set `preset` uses: provenance records it and the daemon's ledger keys done
        files on it. Known before a job (it may load models to tell)."""

    def idle(self) -> None:
        """The queue went idle: give back memory held only for speed (models may stay loaded)."""

    def unload(self) -> None:
        """Drop every model and give its memory back: the daemon's worker loads another model set next."""

    def report_downloads(self, callback: Callable[[int, int, str], None] | None) -> None:
        """From now on, a model download (a hub id's first run) reports callback(bytes done, bytes
        total, repo id) as it goes; an engine that never downloads keeps it and never calls it."""

    def process(
        self, image: Image.Image, meta: ImageMetadata, preset: Preset, *, progress: Progress | None = None
    ) -> EngineResult: ...


@dataclass(frozen=True, slots=True)
class JobResult:
    src: Path
    output: Path
    seed: int | None
    model_id: str  # the engine's id of the model set that made the output, as its provenance says
    timings: dict[str, float] = field(default_factory=dict)


def is_naiup_output(path: Path) -> bool:
    return has_provenance(path)


def output_candidates(src: Path, preset: Preset, template: str) -> Iterator[Path]:
    """`template` filled in beside src, then "<stem> (2)<suffix>", " (3)"...

    A name over the folder's limit (NAME_MAX, 255 bytes on most file systems: ~85 CJK characters) is
    made to fit by shortening the source's stem, whole characters only; the rest of the template
    (`.naiup-<preset>.png`) and the " (2)" stay."""
    try:
        name = OutputConfig(name=template).output_name(src, preset.name)
        # The template around the stem, so the stem alone can be shortened: "\0" is in no file name.
        around = OutputConfig(name=template).output_name(src.with_name("\0" + src.suffix), preset.name)
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(
            "output.name", f"bad template {template!r} (placeholders: {{stem}}, {{preset}})"
        ) from exc
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise ConfigError("output.name", f"must be a plain file name, got {name!r}")
    parts, limit = around.split("\0"), name_max(src.parent)

    def fitted(n: int) -> Path:
        def build(stem: str) -> str:
            if n == 1:
                return stem.join(parts)
            base, suffix = _split_name(stem.join(parts))
            return f"{base} ({n}){suffix}"

        return src.parent / fit_name(src.stem, build, limit)

    first = fitted(1)
    if first.resolve() == src.resolve():
        raise ConfigError("output.name", f"{template!r} names the input itself")
    yield first
    for n in range(2, _MAX_COLLISIONS):
        yield fitted(n)


def name_max(folder: Path) -> int:
    """The longest file name (bytes) the folder's file system takes; 255 where it does not say."""
    try:
        limit = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):  # no pathconf (Windows), or no such folder yet
        return 255
    return limit if limit > 0 else 255


def fit_name(stem: str, build: Callable[[str], str], limit: int) -> str:
    """build(stem), with characters dropped from the end of `stem` until the name's bytes fit `limit`."""
    name = build(stem)
    excess = len(os.fsencode(name)) - limit
    cut = len(stem)
    while excess > 0:
        if cut <= 1:
            raise OutputError(
                f"cannot write beside the original: {name!r} is too long for this file system even with"
                " the source's name shortened (output.name adds too much)"
            )
        cut = max(1, cut - _chars_for(stem[:cut], excess))
        name = build(stem[:cut])
        excess = len(os.fsencode(name)) - limit  # {stem} may appear more than once in a template
    return name


def _chars_for(stem: str, excess: int) -> int:
    """How many characters at the end of `stem` hold at least `excess` bytes (a character is 1-4)."""
    n, freed = 0, 0
    while freed < excess and n < len(stem):
        n += 1
        freed += len(os.fsencode(stem[-n]))
    return max(1, n)


def _split_name(name: str) -> tuple[str, str]:
    dot = name.rfind(".")
    return (name[:dot], name[dot:]) if dot > 0 else (name, "")


def run_job(
    src: Path, preset: Preset, engine: ImageEngine, config: Config, progress: Progress | None = None
) -> JobResult:
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    # 1. Read once: hash and decode the same bytes, so provenance names exactly the version we refined.
    try:
        refuse_special_file(src, src.stat())  # a FIFO would block read_bytes forever
        data = src.read_bytes()
    except FileNotFoundError as exc:
        raise InputError(src, "no such file") from exc
    except IsADirectoryError as exc:
        raise InputError(src, "is a folder, not an image") from exc
    except OSError as exc:
        raise InputError(src, f"cannot read ({exc.strerror or exc})") from exc
    source_sha256 = hashlib.sha256(data).hexdigest()
    image, meta = read_image(src, check_signature=False, data=data)  # no signature needed to refine
    del data
    image = ensure_rgb(image, src)  # here, not only in the engine: an unusable mode names the file
    timings["read"] = time.perf_counter() - t0

    # 2. Refuse before any model work.
    w, h = image.size
    out_w, out_h = round(w * preset.scale), round(h * preset.scale)
    megapixels = out_w * out_h / 1e6
    limit = config.output.max_output_megapixels
    if megapixels > limit:
        raise InputError(
            src,
            f"output would be {out_w}x{out_h} = {megapixels:.1f} MP, over "
            f"output.max_output_megapixels = {limit:g} (preset {preset.name}, scale {preset.scale:g})",
        )
    candidates = output_candidates(src, preset, config.output.name)  # validate the template early
    first = next(candidates)
    check_writable(first)  # a read-only folder fails now, not after the engine's work

    # 3. Engine.
    result = engine.process(image, meta, preset, progress=progress)
    timings.update(result.timings)
    if result.image.size != (out_w, out_h) or result.image.mode != "RGB":
        raise AssertionError(  # a bug in the engine, not the user's problem
            f"engine returned {result.image.mode} {result.image.size}, expected RGB {out_w}x{out_h}"
        )

    # 4. Publish.
    t1 = time.perf_counter()
    carried = {**meta.carry_fields, **meta.text_chunks}  # stealth/EXIF-only NAI data becomes text
    # A source may carry keys no PNG can hold (too long, not Latin-1): those stay behind, not fatal.
    ours = (PROVENANCE_KEY, PARAMETERS_KEY)
    text = {k: v for k, v in carried.items() if k not in ours and is_png_keyword(k)}
    text[PARAMETERS_KEY] = a1111_parameters(result.parameters, result.image.size, image_prompts(meta))
    model_id = engine.model_id(preset)
    text[PROVENANCE_KEY] = provenance_text(
        version=__version__,
        preset=asdict(preset),
        seed=result.seed,
        source_sha256=source_sha256,
        source_name=plain_text(src.name),  # PNG text is UTF-8: undecodable bytes are shown as \\xNN
        model_id=model_id,
        parameters=result.parameters,
    )
    data = encode_png(result.image, text, config.output.png_compress_level)
    timings["encode"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    output = write_first_free(itertools.chain([first], candidates), data)
    timings["write"] = time.perf_counter() - t2
    timings["total"] = time.perf_counter() - t0
    log.info(
        "job done src=%s out=%s preset=%s secs=%.2f", src.name, output.name, preset.name, timings["total"]
    )
    return JobResult(src=src, output=output, seed=result.seed, model_id=model_id, timings=timings)
