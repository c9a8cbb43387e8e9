"""A hub model's first run: download only the files the engine loads, and say how far along it is.

fetch_pipeline(repo_id, half, on_progress) -> HubSnapshot    SD1.5/SDXL diffusers repo
fetch_folder(repo_id, half, on_progress) -> Path              a one-model repo (a VAE): config + weights
fetch_file(repo_id, filename, on_progress) -> Path            one file (a LoRA)
select_files(files, components, half, cached) -> Selection    the choice itself, a pure function
DownloadProgress = Callable[[int, int, str], None]            (bytes done, bytes total, repo id)
download_text(done, total) -> str                             "1.2 of 4.0 GB (30%)", for status lines

A diffusers repo holds far more than naiup runs. stable-diffusion-v1-5 has each weight four or five
times (fp32 and fp16, safetensors and pickled .bin, an EMA-free UNet), the original single-file
checkpoints at its root and a safety checker: a whole-snapshot download is ~45 GB, for ~2 GB the
engine uses. So we read the repo's file list once (sizes included: that is what makes a progress of
"bytes of total" possible) and pick per component:
- only the components the engine loads: UNet, VAE, text encoder(s), tokenizer(s), scheduler config;
- safetensors only: a pickled .bin can run code when loaded, and is a second copy anyway;
- the fp16 variant for the UNet and text encoders where the device runs them in fp16 (half the bytes,
  and the same numbers once cast), the plain weights otherwise; a repo without an fp16 variant gets
  its plain weights, a repo with only fp16 weights gets those (the engine casts them up);
- the VAE always in its plain weights: the engine never runs it in fp16 (SD VAEs, SDXL's above all,
  overflow to NaN there), and fp32 weights cast to bf16/fp32 lose nothing;
- a variant already complete in the local cache wins over downloading another one.
Files are fetched one by one through huggingface_hub (its cache, resume, xet), with our own counter as
its progress class, so the caller hears bytes done of the total of everything still to come.

Offline (HF_HUB_OFFLINE=1, no network, Hub down) a repo already in the cache loads from it, choosing
among the files that are there; one that is not gets our advice, not the libraries' text about
`local_files_only`.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from naiup.engine.load_errors import is_foreign
from naiup.errors import ModelLoadError, hub_model_unavailable

__all__ = [
    "DownloadProgress",
    "HubSnapshot",
    "Selection",
    "download_text",
    "fetch_file",
    "fetch_folder",
    "fetch_pipeline",
    "select_files",
]

log = logging.getLogger(__name__)

DownloadProgress = Callable[[int, int, str], None]

SD15, SDXL = "sd15", "sdxl"  # naiup.engine.models.family's names (not imported: that pulls in torch)
COMPONENTS = {
    SD15: ("unet", "vae", "text_encoder", "tokenizer", "scheduler"),
    SDXL: ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler"),
}
# Components the engine runs in fp16 on an accelerator; the VAE is not one of them.
HALF = frozenset({"unet", "text_encoder", "text_encoder_2"})
FP16 = "fp16"
# Weight files as diffusers (`diffusion_pytorch_model`) and transformers (`model`) save them:
# <stem>[.<variant>][-00001-of-00002].safetensors, and the shard index
# <stem>.safetensors.index[.<variant>].json.
# Other stems (a VAE repo's `sdxl_vae.safetensors` single file) are not what from_pretrained reads.
_WEIGHT = re.compile(
    r"(?P<stem>diffusion_pytorch_model|model)(?:\.(?P<variant>[^./-]+))?(?:-\d+-of-\d+)?\.safetensors"
)
_INDEX = re.compile(
    r"(?P<stem>diffusion_pytorch_model|model)\.safetensors\.index(?:\.(?P<variant>[^./]+))?\.json"
)
_PICKLED = (".bin", ".ckpt", ".pt", ".pth", ".msgpack", ".h5", ".onnx")


@dataclass(frozen=True, slots=True)
class Selection:
    """What to fetch: repo paths and their total bytes; per weight component, the variant to load it
    with (None: the plain weights)."""

    files: tuple[str, ...]
    total: int
    variants: dict[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class HubSnapshot:
    folder: Path  # the snapshot in the local HF cache, laid out as the repo
    family: str  # "sd15" | "sdxl"
    variants: dict[str, str | None]  # weight component -> variant to load


def download_text(done: int, total: int) -> str:
    """How far a download is, for `naiup status`, the tray and the refine bar: "1.2 of 4.0 GB (30%)"."""
    unit, scale = ("GB", 1e9) if total >= 1e9 else ("MB", 1e6)
    digits = 1 if unit == "GB" else 0
    pct = done / total if total else 1.0
    return f"{done / scale:.{digits}f} of {total / scale:.{digits}f} {unit} ({pct:.0%})"


class MissingFiles(Exception):
    """select_files found no usable weights for a component (names it)."""


def _variant_of(name: str) -> tuple[bool, str | None] | None:
    """(is_index, variant) for a weight or shard-index file name, None for anything else."""
    for is_index, pattern in ((False, _WEIGHT), (True, _INDEX)):
        m = pattern.fullmatch(name)
        if m:
            return is_index, m["variant"]
    return None


def select_files(
    files: Mapping[str, int],
    components: Sequence[str],
    half: bool,
    cached: Iterable[str] = (),
    root_config: str = "model_index.json",
) -> Selection:
    """Pick from `files` (repo path -> bytes) what the engine loads of `components` ("" for a repo
    that is one model at its root). `half`: the device runs the HALF components in fp16; `cached`:
    paths already in the local cache. Raises MissingFiles when a component has no safetensors."""
    cached = set(cached)
    chosen = [root_config] if root_config in files else []
    variants: dict[str, str | None] = {}
    for comp in components:
        prefix = f"{comp}/" if comp else ""
        here = {p[len(prefix) :]: p for p in files if p.startswith(prefix) and "/" not in p[len(prefix) :]}
        if comp.startswith("tokenizer"):  # vocab, merges, special tokens, tokenizer config: all small
            chosen += [p for n, p in here.items() if not n.endswith((*_PICKLED, ".safetensors", ".md"))]
            continue
        config = "scheduler_config.json" if comp == "scheduler" else "config.json"
        if config not in here:
            raise MissingFiles(f"no {prefix}{config}")
        chosen.append(here[config])
        if comp == "scheduler":
            continue
        weights: dict[str | None, list[str]] = {}
        for name, path in here.items():
            kind = _variant_of(name)
            if kind is not None:
                weights.setdefault(kind[1], []).append(path)
        what = comp or "the model"
        if not weights:
            pickled = sorted(n for n in here if n.endswith(_PICKLED))
            found = f" (only {', '.join(pickled[:2])})" if pickled else ""
            raise MissingFiles(f"no .safetensors weights for {what}{found}")
        want = FP16 if half and comp in HALF else None
        usable = [v for v in dict.fromkeys((want, None, FP16)) if v in weights and _complete(weights[v])]
        if not usable:
            raise MissingFiles(f"no complete set of .safetensors weights for {what}")
        # A variant whose files are all in the cache already beats downloading the preferred one.
        on_disk = [v for v in usable if set(weights[v]) <= cached]
        variant = (on_disk or usable)[0]
        if variant != want:
            log.info("hub %s: loading the %s weights (%s wanted)", what, variant or "plain", want or "plain")
        variants[comp] = variant
        chosen += sorted(weights[variant])
    chosen = sorted(dict.fromkeys(chosen))
    return Selection(tuple(chosen), sum(files[p] for p in chosen), variants)


def _complete(paths: list[str]) -> bool:
    """One unsharded file, or shards with their index: a variant that is only an index (or only
    shards) cannot be loaded."""
    names = [p.rsplit("/", 1)[-1] for p in paths]
    index = [n for n in names if n.endswith(".json")]
    shards = [n for n in names if not n.endswith(".json")]
    sharded = any(re.search(r"-\d+-of-\d+\.safetensors$", n) for n in shards)
    return bool(shards) and (bool(index) if sharded else len(shards) == 1)


class _Counter:
    """Bytes done of a known total, reported to `on_progress` (which may be None). Thread-safe: xet
    reports from its own threads."""

    def __init__(self, total: int, what: str, on_progress: DownloadProgress | None) -> None:
        self.done, self.total, self.what = 0, total, what
        self._on_progress = on_progress
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self.done = max(0, min(self.total, self.done + int(n)))
            done = self.done
        if self._on_progress is not None:
            self._on_progress(done, self.total, self.what)

    def bar_class(self) -> type:
        """A class huggingface_hub takes as its `tqdm_class`: the documented contract is "mimic
        tqdm"; what it calls on it is construction (total, initial, desc...), use as a context
        manager, update(n) with the bytes written, and a few display calls we ignore."""
        counter = self

        class _Bar:
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                self.n = 0
                self.total = kwargs.get("total")
                initial = int(kwargs.get("initial") or 0)  # a resumed download's bytes already there
                if initial:
                    self.update(initial)

            def update(self, n: int | float | None = 1) -> None:
                self.n += int(n or 0)
                counter.add(int(n or 0))

            def update_transfer(self, n: int | float | None = 1) -> None:
                """Network bytes (xet dedups and compresses them): update() counts what lands on disk."""

            def __enter__(self) -> _Bar:
                return self

            def __exit__(self, *exc: object) -> None:
                return None

            def close(self) -> None:
                return None

            def refresh(self, *args: Any, **kwargs: Any) -> None:
                return None

            def set_postfix_str(self, *args: Any, **kwargs: Any) -> None:
                return None

            def set_description(self, *args: Any, **kwargs: Any) -> None:
                return None

            set_description_str = set_description

        return _Bar


def _hub():
    # Imported late: `naiup status` and the daemon import this module without needing the hub client.
    import huggingface_hub

    return huggingface_hub


def _offline_error(repo_id: str) -> ModelLoadError:
    """Our advice for a hub model that is not in the cache while the Hub cannot be reached: the same
    words errors.plain_message puts in place of diffusers' text for this case."""
    return ModelLoadError(repo_id, hub_model_unavailable(repo_id, _hub().constants.is_offline_mode()))


def _listing(repo_id: str) -> tuple[str, dict[str, int]] | None:
    """(commit, {path: bytes}) from the Hub, or None when the Hub cannot be reached / is off."""
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        info = _hub().HfApi().model_info(repo_id, files_metadata=True)
    except GatedRepoError as exc:
        raise ModelLoadError(
            repo_id, "is a gated hub model: accept its terms on huggingface.co and log in (`hf auth login`)"
        ) from exc
    except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
        raise ModelLoadError(
            repo_id, "no such model on the Hugging Face Hub (or it is private: log in with `hf auth login`)"
        ) from exc
    except Exception as exc:  # offline mode, connection/timeout errors, Hub errors: try the cache
        if not is_foreign(exc):  # our own bug is not "offline"
            raise
        log.info("hub %s: cannot list the repo (%s); looking in the local cache", repo_id, type(exc).__name__)
        return None
    files = {s.rfilename: int((s.lfs.size if s.lfs else s.size) or 0) for s in info.siblings or ()}
    return str(info.sha), files


def _cached_snapshot(repo_id: str, probe: str) -> Path | None:
    """The cached snapshot the default branch points at, found through `probe` (no network)."""
    path = _hub().try_to_load_from_cache(repo_id, probe)
    return Path(path).parents[probe.count("/")] if isinstance(path, str) else None


def _local_files(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_size for p in folder.rglob("*") if p.is_file()}


def _snapshot_of(local: str, path: str) -> Path:
    return Path(local).parents[path.count("/")]


def _download(repo_id: str, commit: str, sel: Selection, on_progress: DownloadProgress | None) -> Path:
    """Fetch `sel` at `commit` into the HF cache, reporting bytes; the snapshot folder."""
    hub = _hub()
    counter = _Counter(sel.total, repo_id, on_progress)
    todo, folder = [], None
    for path in sel.files:
        hit = hub.try_to_load_from_cache(repo_id, path, revision=commit)
        if isinstance(hit, str):
            counter.done += Path(hit).stat().st_size
            folder = _snapshot_of(hit, path)
        else:
            todo.append(path)
    if todo:
        log.info(
            "hub %s: downloading %d file(s), %.2f GB (%.2f GB for the whole model)",
            repo_id,
            len(todo),
            (sel.total - counter.done) / 1e9,
            sel.total / 1e9,
        )
    counter.add(0)  # the first report: the total, and what the cache already holds
    bar = counter.bar_class()
    for path in todo:
        start = counter.done
        try:
            local = hub.hf_hub_download(repo_id, path, revision=commit, tqdm_class=bar)
        except Exception as exc:  # connection lost, disk full...: say which file, in plain words
            if not is_foreign(exc):
                raise
            raise ModelLoadError(
                repo_id, f"download of {path} failed ({type(exc).__name__}: {exc}); the next try resumes it"
            ) from exc
        folder = _snapshot_of(local, path)
        # A file whose bytes the cache held under another name (same blob: SDXL's two tokenizers
        # share their vocabulary) arrives without a byte counted: count it as done now.
        counter.add(max(0, start + Path(local).stat().st_size - counter.done))
    if folder is None:
        raise ModelLoadError(repo_id, "nothing to download (empty repo?)")
    _remember_commit(folder, commit)
    return folder


def _remember_commit(snapshot: Path, commit: str) -> None:
    """Point the cache's `refs/main` at `commit`, as a download by branch name does: files fetched by
    commit id leave it alone, and the offline path (and any other tool) finds the snapshot through it.
    The cache layout is huggingface_hub's documented one: <repo>/refs/<branch> holds the commit id."""
    ref = snapshot.parent.parent / "refs" / "main"
    try:
        if not ref.is_file() or ref.read_text().strip() != commit:
            ref.parent.mkdir(parents=True, exist_ok=True)
            tmp = ref.with_name(f".main.{threading.get_ident()}.tmp")
            tmp.write_text(commit)
            tmp.replace(ref)  # never a half-written ref for a concurrent reader
    except OSError as exc:  # a read-only cache still loads now; only the offline path loses
        log.warning("could not record the downloaded commit in %s: %s", ref, exc)


Reader = Callable[[str], Path]  # repo path -> that file on disk (fetched first if need be)
Chooser = Callable[[dict[str, int], set[str], Reader], Selection]


def _fetch(
    repo_id: str, probe: str, choose: Chooser, on_progress: DownloadProgress | None
) -> tuple[Path, Selection]:
    """List the repo, `choose` (files, cached, read) -> Selection, download it; offline, choose among
    the cached snapshot's files. `probe`: a file every usable snapshot has."""
    listing = _listing(repo_id)
    if listing is None:
        folder = _cached_snapshot(repo_id, probe)
        if folder is None:
            raise _offline_error(repo_id)
        local = _local_files(folder)
        try:
            return folder, choose(local, set(local), lambda path: folder / path)
        except MissingFiles as exc:  # an interrupted first download: the rest needs the Hub
            raise _offline_error(repo_id) from exc
    commit, files = listing
    hub = _hub()
    cached = {p for p in files if isinstance(hub.try_to_load_from_cache(repo_id, p, revision=commit), str)}

    def read(path: str) -> Path:  # small files (model_index.json) the choice depends on
        return Path(
            hub.hf_hub_download(repo_id, path, revision=commit, tqdm_class=_Counter(0, "", None).bar_class())
        )

    try:
        sel = choose(files, cached, read)
    except MissingFiles as exc:
        raise ModelLoadError(
            repo_id,
            f"cannot be loaded by naiup: {exc}. naiup reads diffusers repos with .safetensors weights "
            "(pickled .bin files can run code when loaded)",
        ) from exc
    return _download(repo_id, commit, sel, on_progress), sel


def family_of(model_index: Mapping[str, Any], repo_id: str) -> str:
    """SD15 or SDXL from a model_index.json, refusing what the engine does not run (names the repo)."""
    name = str(model_index.get("_class_name", ""))
    text_encoder = model_index.get("text_encoder")
    if name.startswith("StableDiffusionXL"):
        if not (isinstance(text_encoder, list) and any(text_encoder)):
            raise ModelLoadError(
                repo_id, "is an SDXL refiner (no CLIP-L text encoder); use an SDXL base model"
            )
        return SDXL
    if name in ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline"):
        return SD15
    raise ModelLoadError(
        repo_id, f"is a {name or 'non-diffusers'} repo; naiup refines with SD1.5 or SDXL base models"
    )


def fetch_pipeline(repo_id: str, half: bool, on_progress: DownloadProgress | None = None) -> HubSnapshot:
    """The components of an SD1.5/SDXL diffusers repo that the engine loads, in the local HF cache.
    Its model_index.json is read first (a few hundred bytes), so a refiner or another kind of model
    is refused before gigabytes arrive."""
    family: list[str] = []

    def choose(files: dict[str, int], cached: set[str], read: Reader) -> Selection:
        if "model_index.json" not in files:
            raise MissingFiles("no model_index.json (not a diffusers pipeline)")
        family.append(family_of(_json(repo_id, read("model_index.json")), repo_id))
        return select_files(files, COMPONENTS[family[-1]], half, cached)

    folder, sel = _fetch(repo_id, "model_index.json", choose, on_progress)
    return HubSnapshot(folder, family[-1], sel.variants)


def _json(repo_id: str, path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(repo_id, f"unreadable {path.name}: {exc}") from exc


def fetch_folder(
    repo_id: str, half: bool, on_progress: DownloadProgress | None = None
) -> tuple[Path, str | None]:
    """A repo that is one diffusers/transformers model at its root (a VAE): (snapshot folder, variant
    to load)."""

    def choose(files: dict[str, int], cached: set[str], read: Reader) -> Selection:
        return select_files(files, ("",), half, cached, root_config="config.json")

    folder, sel = _fetch(repo_id, "config.json", choose, on_progress)
    return folder, sel.variants[""]


def fetch_file(repo_id: str, filename: str, on_progress: DownloadProgress | None = None) -> Path:
    """One file of a repo (a LoRA's weights), with progress."""

    def choose(files: dict[str, int], cached: set[str], read: Reader) -> Selection:
        if filename not in files:
            raise MissingFiles(f"no {filename} in this repo")
        return Selection((filename,), files[filename])

    folder, _ = _fetch(repo_id, filename, choose, on_progress)
    return folder / filename
