"""NovelAI character regions through the real Engine and Refiner (tiny random SD1.5 / SDXL models):
which prompt every tile's UNet sample ran with, and that images without positions are untouched."""

from __future__ import annotations

from dataclasses import replace

import nai_writer
import numpy as np
import pytest
import tiny_sd
import tiny_sdxl
import torch
from PIL import Image

from naiup.config import ModelConfig, Preset
from naiup.engine.diffusion.prompt_encoder import PromptEncoder
from naiup.engine.diffusion.refine import Refiner
from naiup.engine.diffusion.sdxl_conditioning import SDXLPromptEncoder
from naiup.engine.engine import Engine
from naiup.engine.image_prompts import Region, plan_regions
from naiup.errors import EngineError
from naiup.metadata.read import ensure_rgb, read_image, read_metadata

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# 128 px in, 2x -> 256 px -> a 32x32 latent in 8-latent tiles overlapping by 2: 5x5 tiles starting at
# 0, 6, 12, 18, 24, the default preset's grid at 2x of a 1024x1024 image (0, 48, ... 192) scaled by 1/8.
PRESET = Preset(
    name="regions", scale=2.0, upscaler="lanczos", steps=4, denoise=0.5, tile_size=8, overlap=2,
    use_image_prompt=True, vae_tiling="off",
)  # fmt: skip
B, M, R, L = 0, 1, 2, 3  # background, then the fixture's characters in order: Miku, Rin, Len
# Per tile, row by row (y), the prompts it runs: Miku stands at (0.5, 0.3), Rin at (0.7, 0.7) and Len
# at (0.3, 0.7), each over half the image; three tiles lie inside one character's full-weight core,
# where the background has no weight and does not run.
FIXTURE_TILES = [
    [{B}, {B, M}, {B, M}, {B, M}, {B}],
    [{B}, {B, M}, {M}, {B, M}, {B}],
    [{B, L}, {B, M, L}, {B, M, R, L}, {B, M, R}, {B, R}],
    [{B, L}, {L}, {B, R, L}, {R}, {B, R}],
    [{B, L}, {B, L}, {B, R, L}, {B, R}, {B, R}],
]


@pytest.fixture(scope="module")
def model_cfg(tmp_path_factory) -> ModelConfig:
    return tiny_sd.cpu_config(tmp_path_factory)


class UnetSpy:
    """Records every UNet call's per-sample context and added conditioning (a forward hook)."""

    def __init__(self, unet: torch.nn.Module) -> None:
        self.contexts: list[torch.Tensor] = []
        self.pooled: list[torch.Tensor] = []
        self.handle = unet.register_forward_hook(self._record, with_kwargs=True)

    def _record(self, _module, _args, kwargs, _out) -> None:
        self.contexts.extend(kwargs["encoder_hidden_states"].float())
        added = kwargs.get("added_cond_kwargs")
        if added:
            self.pooled.extend(added["text_embeds"].float())

    def which(self, references: list[torch.Tensor]) -> list[int]:
        """Per recorded sample, the index of the reference embedding its first chunk equals."""
        out = []
        for ctx in self.contexts:
            hits = [i for i, ref in enumerate(references) if torch.allclose(ctx[:77], ref[0, :77], atol=1e-5)]
            assert len(hits) == 1, hits
            out.append(hits[0])
        return out


def _engine(model_cfg) -> tuple[Engine, list[Refiner]]:
    made: list[Refiner] = []

    def factory(model, device):
        made.append(Refiner(model, device))
        return made[-1]

    return Engine(model_cfg, torch.device("cpu"), refiner_factory=factory), made


def _references(refiner: Refiner, prompts: list[str]) -> list[torch.Tensor]:
    m = refiner.models
    encoder = PromptEncoder(m.tokenizer, m.text_encoder, refiner.model.clip_skip)
    return [encoder.encode(p) for p in prompts]


def test_the_three_character_fixture_runs_each_prompt_only_where_its_character_stands(
    model_cfg, nai_fixtures
):
    image, meta = read_image(nai_fixtures / "nai45_full_3chars_1024.png")
    small = ensure_rgb(image).resize((128, 128), Image.LANCZOS)
    plan = plan_regions(PRESET, meta)
    quality = PRESET.prompt
    base = "dancing, #テスト\nwhite background, , very aesthetic, masterpiece, no text"
    assert plan.prompt == f"{quality}, {base}"  # 2girls, 1boy dropped from the background only
    assert plan.dropped == ("2girls", "1boy")
    assert [r.prompt for r in plan.regions] == [
        f"{quality}, 2girls, 1boy, {base}, girl, hatsune miku, spread arms",
        f"{quality}, 2girls, 1boy, {base}, girl, kagamine rin, hand up",
        f"{quality}, 2girls, 1boy, {base}, boy, kagamine len, hand up",
    ]
    assert [r.center for r in plan.regions] == [(0.5, 0.3), (0.7, 0.7), (0.3, 0.7)]

    engine, made = _engine(model_cfg)
    engine.load(PRESET)
    spy = UnetSpy(made[0].models.unet)
    try:
        result = engine.process(small, meta, PRESET)
    finally:
        spy.handle.remove()
    assert result.image.size == (256, 256)
    assert result.parameters["prompt"] == plan.prompt
    assert [r["center"] for r in result.parameters["regions"]] == [[0.5, 0.3], [0.7, 0.7], [0.3, 0.7]]

    seen = spy.which(_references(made[0], [plan.prompt, *(r.prompt for r in plan.regions)]))
    # Tile-major work, regions in order within a tile, batched whatever the region: per step 49
    # samples in 4 balanced calls of 13 (the last 3 slots repeat the last sample). 2 UNet steps.
    expected = [r for row in FIXTURE_TILES for tile in row for r in sorted(tile)]
    assert len(expected) == 49 and len(seen) == 2 * 52
    for step in (seen[:52], seen[52:]):
        assert step[:49] == expected
        assert step[49:] == [expected[-1]] * 3


def test_images_without_positions_give_the_bytes_of_regions_off(model_cfg, tmp_path):
    engine, _ = _engine(model_cfg)
    chars = [("girl, red hair", "", (0.3, 0.5)), ("boy, blue hair", "", (0.7, 0.5))]
    files = {
        "use_coords false": nai_writer.write_nai_png(
            tmp_path / "a.png", (128, 128), prompt="2girls, park", characters=chars, use_coords=False
        ),
        "no characters (V3)": nai_writer.write_nai_png(tmp_path / "b.png", (128, 128), prompt="1girl, park"),
    }
    for what, path in files.items():
        meta = read_metadata(path)
        image = Image.open(path).convert("RGB")
        assert plan_regions(PRESET, meta).regions == (), what
        auto = engine.process(image, meta, PRESET)
        off = engine.process(image, meta, replace(PRESET, regions="off"))
        assert auto.image.tobytes() == off.image.tobytes(), what
        assert "regions" not in auto.parameters

    # The same picture with positions does take the regional path, and it changes the result.
    placed = nai_writer.write_nai_png(tmp_path / "c.png", (128, 128), prompt="2girls, park", characters=chars)
    meta = read_metadata(placed)
    image = Image.open(placed).convert("RGB")
    assert len(plan_regions(PRESET, meta).regions) == 2
    regional = engine.process(image, meta, PRESET).image.tobytes()
    assert regional != engine.process(image, meta, replace(PRESET, regions="off")).image.tobytes()
    assert regional == engine.process(image, meta, PRESET).image.tobytes()  # seeded: same bytes again


def _image(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


@pytest.fixture(scope="module")
def sdxl_refiner(tmp_path_factory) -> Refiner:
    tiny = tiny_sdxl.session_tiny_sdxl(tmp_path_factory)
    refiner = Refiner(ModelConfig(checkpoint=str(tiny.folder), lcm_lora="", device="cpu"))
    refiner.load()
    return refiner


SDXL_PRESET = Preset(
    name="xl", steps=4, denoise=0.5, cfg=1.5, sampler="euler", tile_size=8, overlap=2, vae_tiling="off"
)


def test_sdxl_with_cfg_conditions_every_sample_on_its_own_region(sdxl_refiner):
    # A long character prompt (several 75-token chunks) beside short ones: contexts are padded to one
    # length so tiles of different regions share a UNet call; each keeps its own pooled embedding,
    # for the cond half and for the uncond half (the character's own negative).
    long = ", ".join(f"detail {i}" for i in range(40))
    regions = [
        Region("1girl, red hair, " + long, "bad hands", (0.25, 0.5), 0.5),
        Region("1boy, blue hair", "", (0.75, 0.5), 0.5),
    ]
    m = sdxl_refiner.models
    encoder = SDXLPromptEncoder(m.tokenizer, m.text_encoder, m.tokenizer_2, m.text_encoder_2, 1)
    prompts = ["park", regions[0].prompt, regions[1].prompt]
    negatives = ["lowres", "bad hands", ""]
    spy = UnetSpy(m.unet)
    try:
        out = sdxl_refiner.refine(
            _image(128, 96), SDXL_PRESET, prompt="park", negative_prompt="lowres", seed=3, regions=regions
        )
    finally:
        spy.handle.remove()
    assert out.size == (128, 96)
    longest = encoder.encode(regions[0].prompt).context.shape[1]
    assert longest > 77 and {tuple(c.shape) for c in spy.contexts} == {(longest, 80)}
    # Calls are [uncond x n, cond x n]: match both halves against the prompts and the negatives.
    cond_refs = [encoder.encode(p) for p in prompts]
    seen_regions: set[int] = set()
    uncond_samples = 0
    for ctx, pooled in zip(spy.contexts, spy.pooled, strict=True):
        hit = [i for i, c in enumerate(cond_refs) if torch.allclose(ctx[:77], c.context[0, :77], atol=1e-5)]
        if hit:
            assert torch.allclose(pooled, cond_refs[hit[0]].pooled[0], atol=1e-5)
            seen_regions.add(hit[0])
            continue
        # An uncond sample: its negative's context and pooled, or all zeros for the empty negative.
        uncond_samples += 1
        neg = [
            n
            for n in negatives
            if n and torch.allclose(ctx[:77], encoder.encode(n).context[0, :77], atol=1e-5)
        ]
        if neg:
            assert torch.allclose(pooled, encoder.encode(neg[0]).pooled[0], atol=1e-5)
        else:
            assert ctx.abs().max() == 0 and pooled.abs().max() == 0
    assert seen_regions == {0, 1, 2}
    assert uncond_samples * 2 == len(spy.contexts)


def test_sdxl_regions_that_all_carry_the_background_prompt_give_the_plain_result(sdxl_refiner):
    # Every region with the same prompt as the background: the blend mixes equal predictions, so
    # the result is the single-prompt refine up to fp32 rounding of the weights (CFG on, SDXL).
    same = [Region("park", "lowres", (0.3, 0.4), 0.6), Region("park", "lowres", (0.6, 0.6), 0.5)]
    image = _image(128, 96, seed=1)
    plain = sdxl_refiner.refine(image, SDXL_PRESET, prompt="park", negative_prompt="lowres", seed=5)
    mixed = sdxl_refiner.refine(
        image, SDXL_PRESET, prompt="park", negative_prompt="lowres", seed=5, regions=same
    )
    diff = np.abs(np.asarray(plain, dtype=np.int16) - np.asarray(mixed, dtype=np.int16))
    assert diff.max() <= 1, diff.max()
    # ...while a different character prompt does change it.
    other = [Region("1girl, red hair", "lowres", (0.3, 0.4), 0.6)]
    changed = sdxl_refiner.refine(
        image, SDXL_PRESET, prompt="park", negative_prompt="lowres", seed=5, regions=other
    )
    assert np.abs(np.asarray(plain, dtype=np.int16) - np.asarray(changed, dtype=np.int16)).max() > 1


def test_prompt_editing_switches_every_regions_prompt_per_step(model_cfg):
    # A1111 prompt editing in the preset prompt reaches the background and every character: the
    # first UNet step runs "cat" in all of them, the second "dog".
    refiner = Refiner(model_cfg)
    refiner.load()
    regions = [
        Region("[cat:dog:0.5], red hair", "", (0.3, 0.5), 0.5),
        Region("[cat:dog:0.5], boy", "", (0.8, 0.5), 0.4),
    ]
    spy = UnetSpy(refiner.models.unet)
    try:
        refiner.refine(
            _image(128, 128),
            PRESET,
            prompt="[cat:dog:0.5], park",
            negative_prompt="",
            seed=2,
            regions=regions,
        )
    finally:
        spy.handle.remove()
    texts = [f"{word}, {rest}" for word in ("cat", "dog") for rest in ("park", "red hair", "boy")]
    seen = spy.which(_references(refiner, texts))
    half = len(seen) // 2
    assert set(seen[:half]) == {0, 1, 2} and set(seen[half:]) == {3, 4, 5}


@pytest.mark.parametrize("region", [Region("a", "", (0.5, 0.5), 0.0), Region("a", "", (1.5, 0.5), 0.5)])
def test_a_region_plan_regions_would_not_make_is_refused_before_any_model_work(model_cfg, region):
    with pytest.raises(EngineError, match="character region 1"):
        Refiner(model_cfg).refine(
            _image(64, 64), PRESET, prompt="p", negative_prompt="", seed=1, regions=[region]
        )
