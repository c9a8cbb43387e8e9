"""Which output belongs to which original: the ledger first, then the output's `naiup` provenance chunk.

    find_pair(image, ledger) -> Pair      # image = an output or its source; NaiupError when neither is known

An output names its source in its provenance (`source_name`, `source_sha256`) and is written beside it,
so a pair is found without the service too (`naiup refine` keeps no ledger). Either file may since have
been deleted or moved: the pair then says so and the page shows a placeholder for it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from naiup.daemon.ledger import Item, Ledger, State
from naiup.errors import NaiupError
from naiup.output.provenance import PROVENANCE_KEY

_HASH_LIMIT = 256 * 1024 * 1024  # hashing the original only to warn that it changed: skip giant files


@dataclass(frozen=True, slots=True)
class Pair:
    source: Path | None  # the original, None when nothing names it
    output: Path | None  # the result
    item: Item | None  # the ledger row, when the service made it
    provenance: dict[str, Any] | None  # the output's `naiup` chunk, when readable

    @property
    def source_changed(self) -> bool:
        """The original's bytes are not those the result was made from (edited or replaced since)."""
        want = (self.provenance or {}).get("source_sha256")
        if not want or self.source is None or not self.source.is_file():
            return False
        try:
            if self.source.stat().st_size > _HASH_LIMIT:
                return False
            return hashlib.sha256(self.source.read_bytes()).hexdigest() != want
        except OSError:
            return False


def read_provenance(path: Path) -> dict[str, Any] | None:
    """The `naiup` chunk of an output as a dict; None for anything else. Reads chunks, not pixels."""
    try:
        with Image.open(path) as im:
            if im.format != "PNG":
                return None
            text = im.info.get(PROVENANCE_KEY)  # text chunks before IDAT, where naiup writes them
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
    if not isinstance(text, str):
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return None
    return record if isinstance(record, dict) and record.get("software") == "naiup" else None


def find_pair(image: Path, ledger: Ledger | None) -> Pair:
    image = Path(image).expanduser().absolute()
    provenance = read_provenance(image) if image.is_file() else None
    if provenance is not None:  # an output
        item = ledger.by_output(image) if ledger else None
        if item is not None:
            return Pair(Path(item.path), image, item, provenance)
        name = provenance.get("source_name")
        # Only the name: a chunk edited to hold a path must not point the page outside the folder.
        source = image.parent / Path(name).name if isinstance(name, str) and Path(name).name else None
        return Pair(source, image, None, provenance)
    item = ledger.by_path(image) if ledger else None
    if item is None and ledger is not None:
        # A deleted output (no chunk left to read) or one whose chunk a tool stripped.
        item = ledger.by_output(image)
        if item is not None:
            return Pair(Path(item.path), image, item, None)
    if item is not None and item.state is State.DONE and item.output:
        output = Path(item.output)
        return Pair(image, output, item, read_provenance(output) if output.is_file() else None)
    beside = find_output_beside(image) if image.is_file() else None
    if beside is not None:
        return Pair(image, beside[0], item, beside[1])
    if not image.exists():
        raise NaiupError(f"{image}: no such file, and the ledger knows no result for it")
    if not image.is_file():  # a FIFO, socket or folder: refining it would not help either
        raise NaiupError(f"{image}: not a regular file")
    if item is not None and item.state in (State.FAILED, State.SKIPPED):
        raise NaiupError(f"{image}: no result: {item.state} ({item.error or 'no reason recorded'})")
    state = f" (the service has it as {item.state})" if item is not None else ""
    raise NaiupError(f"{image}: no naiup result found{state}; make one with: naiup refine {image}")


def find_output_beside(source: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest output in the source's folder whose provenance names this source (the CLI's outputs)."""
    found: list[tuple[float, Path, dict[str, Any]]] = []
    try:
        entries = list(source.parent.iterdir())
    except OSError:
        return None
    for p in entries:
        # Output names contain the source's stem in every template that keeps outputs apart.
        if p == source or source.stem not in p.name or p.suffix.lower() != ".png":
            continue
        record = read_provenance(p)
        if record is None or record.get("source_name") != source.name:
            continue
        try:
            found.append((p.stat().st_mtime, p, record))
        except OSError:
            continue
    if not found:
        return None
    _, path, record = max(found, key=lambda t: t[0])
    return path, record
