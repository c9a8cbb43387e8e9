"""A hub id's first run: only the files the engine loads come down, and the wait reports bytes of total.

The Hub is a local HTTP server speaking its download API (tests/hub_server.py), so huggingface_hub's
own client code runs: listing, HEAD, GET, its cache layout. The repos are the tiny test models laid
out as real repos are: fp16 twins, pickled .bin twins, a non-EMA UNet, single-file checkpoints at the
root, a safety checker.
"""

from __future__ import annotations

import json

import pytest
import tiny_sd
import tiny_sdxl
import torch
from hub_server import FakeHub, repo_from_folder, use_hub
from safetensors.torch import load, save

from naiup.engine.models import hub
from naiup.engine.models.load import load_models, load_vae, resolve_lora_file
from naiup.errors import ModelLoadError, hub_model_unavailable
from naiup.testing import TOKENIZER_DIR

SD, XL = "someone/anime-sd15", "someone/anime-xl"
CPU = torch.device("cpu")


def _half(data: bytes) -> bytes:
    return save({k: v.half() for k, v in load(data).items()})


def _as_hub_repo(files: dict[str, bytes], weights: tuple[str, ...]) -> dict[str, bytes]:
    """A save_pretrained folder dressed like a hub repo: every weight also as fp16 and pickled .bin."""
    repo = dict(files)
    for comp in weights:
        stem = "model" if comp.startswith("text_encoder") else "diffusion_pytorch_model"
        plain = repo[f"{comp}/{stem}.safetensors"]
        repo[f"{comp}/{stem}.fp16.safetensors"] = _half(plain)
        repo[f"{comp}/{stem}.bin"] = b"pickle" + plain[:5000]
        repo[f"{comp}/{stem}.fp16.bin"] = b"pickle" + plain[:3000]
    repo["unet/diffusion_pytorch_model.non_ema.safetensors"] = repo[
        "unet/diffusion_pytorch_model.safetensors"
    ]
    repo["v1-5-pruned.ckpt"] = b"pickled single file" * 500
    repo["v1-5-pruned-emaonly.safetensors"] = b"single file" * 500
    repo["safety_checker/config.json"] = b'{"model": "safety"}'
    repo["safety_checker/model.safetensors"] = b"safety weights" * 200
    repo["feature_extractor/preprocessor_config.json"] = b'{"crop_size": 224}'
    repo["README.md"] = b"# a model card"
    return repo


@pytest.fixture(scope="module")
def repos(tmp_path_factory) -> dict[str, dict[str, bytes]]:
    sd = tiny_sd.session_tiny_sd(tmp_path_factory)
    xl = tiny_sdxl.session_tiny_sdxl(tmp_path_factory)
    refiner = {"model_index.json": json.dumps(
        {"_class_name": "StableDiffusionXLImg2ImgPipeline", "text_encoder": [None, None],
         "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"]}).encode(),
        "unet/config.json": b"{}", "unet/diffusion_pytorch_model.safetensors": b"x" * 10_000}  # fmt: skip
    # As stable-diffusion-xl-base-1.0 has them: the same BPE files in both tokenizer folders.
    bpe = {f"{tok}/{name}": (TOKENIZER_DIR / name).read_bytes()
           for tok in ("tokenizer", "tokenizer_2") for name in ("vocab.json", "merges.txt")}  # fmt: skip
    sd_repo = _as_hub_repo(repo_from_folder(sd.folder), ("unet", "vae", "text_encoder"))
    pickled = {k: v for k, v in sd_repo.items() if not (k.startswith("unet/") and k.endswith(".safetensors"))}
    return {
        SD: sd_repo,
        XL: _as_hub_repo(repo_from_folder(xl.folder), ("unet", "vae", "text_encoder", "text_encoder_2"))
        | bpe,
        "someone/plain-only": repo_from_folder(sd.folder),  # no fp16 variant at all
        "someone/xl-refiner": refiner,
        "someone/pickled-unet": pickled,
        "someone/lcm-lora": {"pytorch_lora_weights.safetensors": sd.lcm_lora.read_bytes(), "README.md": b"#"},
        "someone/vae": {
            "config.json": (sd.folder / "vae" / "config.json").read_bytes(),
            "diffusion_pytorch_model.safetensors": (
                sd.folder / "vae" / "diffusion_pytorch_model.safetensors"
            ).read_bytes(),
            "diffusion_pytorch_model.bin": b"pickle" * 100,
            "sdxl_vae.safetensors": b"a single-file copy" * 100,
        },
    }


@pytest.fixture
def fake_hub(repos, tmp_path, monkeypatch):
    with FakeHub(repos) as server:
        use_hub(monkeypatch, server, tmp_path / "hf-cache")
        yield server


class Reports(list):
    def __call__(self, done: int, total: int, what: str) -> None:
        self.append((done, total, what))


def _fetched(server: FakeHub, repo: str) -> set[str]:
    return {f.split(":", 1)[1] for f in server.fetched if f.startswith(repo + ":")}


SD_COMMON = {
    "model_index.json", "scheduler/scheduler_config.json", "unet/config.json", "vae/config.json",
    "text_encoder/config.json", "tokenizer/merges.txt", "tokenizer/special_tokens_map.json",
    "tokenizer/tokenizer_config.json", "tokenizer/vocab.json",
}  # fmt: skip


def _common(repo: dict[str, bytes]) -> set[str]:
    return {p for p in SD_COMMON if p in repo} | {p for p in repo if p.startswith("tokenizer/")}


def test_a_gpu_first_run_fetches_the_fp16_unet_and_text_encoder_and_the_plain_vae_only(fake_hub, repos):
    reports = Reports()
    snap = hub.fetch_pipeline(SD, half=True, on_progress=reports)
    expected = _common(repos[SD]) | {
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "text_encoder/model.fp16.safetensors",
        "vae/diffusion_pytorch_model.safetensors",  # the VAE never runs in fp16: its plain weights
    }
    assert _fetched(fake_hub, SD) == expected
    assert snap.family == "sd15"
    assert snap.variants == {"unet": "fp16", "vae": None, "text_encoder": "fp16"}
    # Bytes of total: one total (what is fetched, nothing else), rising, ending complete.
    total = sum(len(repos[SD][p]) for p in expected)
    assert {t for _, t, _ in reports} == {total} and {w for _, _, w in reports} == {SD}
    done = [d for d, _, _ in reports]
    assert done == sorted(done) and done[0] < total and done[-1] == total
    assert len(reports) > len(expected) // 2  # reported as it went, not once at the end
    for path in expected:
        assert (snap.folder / path).read_bytes() == repos[SD][path]


def test_a_cpu_first_run_fetches_plain_weights_and_a_repo_without_fp16_falls_back_cleanly(fake_hub, repos):
    plain = {"unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors",
             "vae/diffusion_pytorch_model.safetensors"}  # fmt: skip
    snap = hub.fetch_pipeline(SD, half=False)
    assert _fetched(fake_hub, SD) == _common(repos[SD]) | plain
    assert set(snap.variants.values()) == {None}
    # fp16 wanted, none published: the plain weights, no error.
    snap = hub.fetch_pipeline("someone/plain-only", half=True)
    assert _fetched(fake_hub, "someone/plain-only") == _common(repos["someone/plain-only"]) | plain
    assert set(snap.variants.values()) == {None}


def test_the_second_run_fetches_nothing_and_a_cached_variant_beats_downloading_another(fake_hub):
    hub.fetch_pipeline(SD, half=False)
    fake_hub.fetched.clear()
    reports = Reports()
    snap = hub.fetch_pipeline(SD, half=True, on_progress=reports)  # fp16 wanted, plain already here
    assert fake_hub.fetched == []
    assert set(snap.variants.values()) == {None}
    assert reports[-1][0] == reports[-1][1] > 0  # complete from the first report


def test_sdxl_repo_fetches_both_encoders_and_counts_shared_tokenizer_files(fake_hub, repos):
    reports = Reports()
    snap = hub.fetch_pipeline(XL, half=True, on_progress=reports)
    got = _fetched(fake_hub, XL)
    assert snap.family == "sdxl"
    assert {"text_encoder_2/model.fp16.safetensors", "text_encoder/model.fp16.safetensors",
            "unet/diffusion_pytorch_model.fp16.safetensors", "vae/diffusion_pytorch_model.safetensors",
            "text_encoder_2/config.json"} <= got  # fmt: skip
    assert not any(p.endswith((".bin", ".ckpt")) or p.startswith("safety_checker") for p in got)
    # tokenizer_2's vocab is the same blob as tokenizer's: in place without a second transfer, and
    # counted, so the progress still ends complete.
    assert repos[XL]["tokenizer_2/vocab.json"] == repos[XL]["tokenizer/vocab.json"]
    assert "tokenizer_2/vocab.json" not in got and (snap.folder / "tokenizer_2" / "vocab.json").is_file()
    assert reports[-1][0] == reports[-1][1]


def test_load_models_from_a_hub_id_equals_the_folder_and_reports_the_download(fake_hub, tmp_path_factory):
    reports = Reports()
    m = load_models(SD, "", CPU, on_download=reports)
    folder = load_models(str(tiny_sd.session_tiny_sd(tmp_path_factory).folder), "", CPU)
    assert reports and reports[-1][0] == reports[-1][1]
    for a, b in ((m.unet, folder.unet), (m.vae, folder.vae), (m.text_encoder, folder.text_encoder)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert m.tokenizer("1girl").input_ids == folder.tokenizer("1girl").input_ids
    assert m.family == "sd15" and m.scheduler_config["prediction_type"] == "epsilon"


def test_sdxl_hub_id_loads_and_matches_its_folder(fake_hub, tmp_path_factory):
    m = load_models(XL, "", CPU)
    folder = load_models(str(tiny_sdxl.session_tiny_sdxl(tmp_path_factory).folder), "", CPU)
    assert m.family == "sdxl" and m.tokenizer_2.pad_token == "!"
    assert torch.equal(m.text_encoder_2.text_projection.weight, folder.text_encoder_2.text_projection.weight)
    assert torch.equal(m.unet.conv_in.weight, folder.unet.conv_in.weight)


def test_vae_and_lora_hub_ids_fetch_their_weights_only(fake_hub, repos):
    reports = Reports()
    vae = load_vae("someone/vae", on_download=reports)
    assert _fetched(fake_hub, "someone/vae") == {"config.json", "diffusion_pytorch_model.safetensors"}
    assert vae.config.scaling_factor == pytest.approx(0.18215) and reports[-1][0] == reports[-1][1]
    reports.clear()
    path = resolve_lora_file("someone/lcm-lora", on_download=reports)
    assert path.read_bytes() == repos["someone/lcm-lora"]["pytorch_lora_weights.safetensors"]
    assert _fetched(fake_hub, "someone/lcm-lora") == {"pytorch_lora_weights.safetensors"}
    assert reports[-1][:2] == (len(path.read_bytes()),) * 2


def test_refused_repos_say_why_before_any_weights_arrive(fake_hub):
    with pytest.raises(ModelLoadError, match="someone/xl-refiner: is an SDXL refiner"):
        hub.fetch_pipeline("someone/xl-refiner", half=True)
    assert _fetched(fake_hub, "someone/xl-refiner") == {"model_index.json"}
    with pytest.raises(
        ModelLoadError, match=r"no \.safetensors weights for unet \(only diffusion_pytorch_model"
    ):
        hub.fetch_pipeline("someone/pickled-unet", half=True)
    assert _fetched(fake_hub, "someone/pickled-unet") == {"model_index.json"}
    with pytest.raises(ModelLoadError, match="no such model on the Hugging Face Hub"):
        hub.fetch_pipeline("someone/not-there", half=True)


def test_offline_a_cached_model_loads_and_a_missing_one_gets_our_advice(fake_hub, tmp_path, monkeypatch):
    hub.fetch_pipeline(SD, half=True)
    use_hub(monkeypatch, None, tmp_path / "hf-cache")  # HF_HUB_OFFLINE=1, same cache
    snap = hub.fetch_pipeline(SD, half=True)
    assert snap.variants == {"unet": "fp16", "vae": None, "text_encoder": "fp16"}
    m = load_models(SD, "", CPU)  # loads what is there: fp16 files, cast for the CPU
    assert m.unet.dtype == torch.float32
    with pytest.raises(ModelLoadError) as info:
        load_models(XL, "", CPU)
    text = str(info.value)
    assert text.startswith(f"{XL}: hub model not in the local Hugging Face cache, and HF_HUB_OFFLINE is set")
    assert "local_files_only" not in text and text == f"{XL}: {hub_model_unavailable(XL, offline=True)}"


def test_an_unreachable_hub_says_so_in_our_words(repos, tmp_path, monkeypatch):
    with FakeHub(repos) as server:
        url = server.url
    use_hub(monkeypatch, server, tmp_path / "cache")  # the server is gone: connection refused
    assert url == server.url
    with pytest.raises(
        ModelLoadError, match=r"the Hub could not be reached.*refine once while online"
    ) as info:
        hub.fetch_pipeline(SD, half=True)
    assert "local_files_only" not in str(info.value)


def test_sharded_variants_come_with_their_index_and_incomplete_sets_are_not_chosen():
    files = {
        "model_index.json": 1,
        "unet/config.json": 1,
        "unet/diffusion_pytorch_model.fp16-00001-of-00002.safetensors": 100,
        "unet/diffusion_pytorch_model.fp16-00002-of-00002.safetensors": 50,
        "unet/diffusion_pytorch_model.safetensors.index.fp16.json": 2,
        "unet/diffusion_pytorch_model-00001-of-00002.safetensors": 200,  # plain shards, no index
        "unet/diffusion_pytorch_model-00002-of-00002.safetensors": 100,
    }
    sel = hub.select_files(files, ("unet",), half=True)
    assert sel.variants == {"unet": "fp16"}
    assert sel.files == tuple(sorted(p for p in files if "fp16" in p or p.endswith("config.json") or
                                     p == "model_index.json"))  # fmt: skip
    assert sel.total == 1 + 1 + 100 + 50 + 2
    plain_without_index = {k: v for k, v in files.items() if "fp16" not in k}
    with pytest.raises(hub.MissingFiles, match="no complete set"):
        hub.select_files(plain_without_index, ("unet",), half=False)


def test_the_progress_class_counts_resumed_bytes_and_ignores_display_calls():
    reports = Reports()
    counter = hub._Counter(100, "r", reports)
    bar_class = counter.bar_class()
    with bar_class(total=60, initial=20, desc="f", unit="B") as bar:  # 20 bytes there from a past try
        bar.update(30)
        bar.update_transfer(999)  # network bytes: not what is on disk
        bar.set_postfix_str("1 MB/s")
        bar.refresh()
    assert [d for d, _, _ in reports] == [20, 50]
