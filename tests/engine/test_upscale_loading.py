"""Loading upscalers: the shipped Real-CUGAN default, optional built-ins, paths, bad files, sizes."""

from __future__ import annotations

import hashlib
import shutil
from importlib import resources

import numpy as np
import pytest
import torch
from PIL import Image

from naiup.engine.upscale.upscaler import load_upscaler, pick_upscale_dtype
from naiup.errors import ModelLoadError
from naiup.upscaler_names import BUILTIN_UPSCALERS

REALCUGAN_SHA256 = "3a26f0dfd2313c2470a70e71341e199293c6f4c3de6ab2a53eb4af1cc0948d66"  # SOURCES.md


def test_default_realcugan_weights_ship_with_their_licences():
    folder = resources.files("naiup") / "data" / "upscalers"
    data = (folder / BUILTIN_UPSCALERS["realcugan-2x"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == REALCUGAN_SHA256
    names = {p.name for p in folder.iterdir()}
    assert {"LICENSE-Real-CUGAN.txt", "LICENSE-realcugan-ncnn-vulkan.txt", "SOURCES.md"} <= names


def test_realcugan_default_upscales_a_real_nai_image_2x(realcugan, nai_patch):
    assert realcugan.scale == 2 and realcugan.net.architecture.id == "RealCUGAN"
    assert realcugan.dtype == torch.float32  # CPU is always fp32
    assert realcugan.model_id == "realcugan-2x@" + REALCUGAN_SHA256[:12]
    src = nai_patch
    out = realcugan.upscale(src, 2.0)
    assert out.mode == "RGB" and out.size == (256, 256)
    # A real SR model, not a resize: faithful when shrunk back, yet crisper lines than Lanczos 2x
    # (measured gradient energy 10.8 vs 9.6 on this patch).
    lanczos = np.asarray(src.resize((256, 256), Image.Resampling.LANCZOS), dtype=float)
    ours = np.asarray(out, dtype=float)
    back = np.asarray(out.resize((128, 128), Image.Resampling.LANCZOS), dtype=float)
    assert np.abs(back - np.asarray(src, dtype=float)).mean() < 5

    def grad_energy(a):
        return np.abs(np.diff(a, axis=0)).mean() + np.abs(np.diff(a, axis=1)).mean()

    assert grad_energy(ours) > 1.05 * grad_energy(lanczos)


def test_lanczos_is_always_available_and_hits_the_exact_size():
    up = load_upscaler("lanczos")
    for w, h, s in [(7, 5, 2.0), (101, 33, 1.5), (64, 64, 4.0), (3, 9, 0.5), (10, 10, 1.0)]:
        assert up.upscale(Image.new("RGB", (w, h), "red"), s).size == (round(w * s), round(h * s))


@pytest.mark.parametrize(("scale", "passes"), [(1.5, 1), (2.0, 1), (3.0, 2), (4.0, 2), (5.0, 3)])
def test_a_2x_model_runs_as_often_as_the_target_needs(tiny_x2, scale, passes):
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (24, 30, 3), dtype=np.uint8))
    calls = []
    inner = tiny_x2.net

    class Counting:
        scale = 2

        def __call__(self, x):
            calls.append(x.shape)
            return inner(x)

    tiny_x2.net = Counting()
    out = tiny_x2.upscale(image, scale)
    assert out.size == (round(30 * scale), round(24 * scale))
    assert len(calls) == passes


def test_x2_twice_is_what_a_4x_preset_gets(tiny_x2):
    image = Image.fromarray(np.random.default_rng(2).integers(0, 256, (20, 20, 3), dtype=np.uint8))
    twice = tiny_x2.upscale(tiny_x2.upscale(image, 2), 2)
    assert np.array_equal(np.asarray(tiny_x2.upscale(image, 4)), np.asarray(twice))


def test_a_4x_model_with_a_2x_preset_is_lanczos_reduced(tiny_x4_file):
    up = load_upscaler(str(tiny_x4_file))
    image = Image.fromarray(np.random.default_rng(3).integers(0, 256, (16, 24, 3), dtype=np.uint8))
    native = up.upscale(image, 4)
    assert native.size == (96, 64)
    expected = native.resize((48, 32), Image.Resampling.LANCZOS)
    assert np.array_equal(np.asarray(up.upscale(image, 2)), np.asarray(expected))


def test_optional_builtin_missing_names_the_file_and_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("NAIUP_MODELS_DIR", str(tmp_path))
    with pytest.raises(ModelLoadError) as err:
        load_upscaler("realesrgan-x4-anime")
    assert "RealESRGAN_x4plus_anime_6B.safetensors" in str(err.value) and str(tmp_path) in str(err.value)


def test_optional_builtin_loads_once_the_user_adds_it(tmp_path, monkeypatch, shared_weights):
    shutil.copy(shared_weights / "realesr-animevideov3" / "realesr-animevideov3-x4.safetensors", tmp_path)
    monkeypatch.setenv("NAIUP_MODELS_DIR", str(tmp_path))
    up = load_upscaler("realesr-animevideov3-x4")
    assert up.scale == 4 and up.net.architecture.id == "Compact" and up.overlap == 16


@pytest.mark.parametrize(
    ("content", "name", "reason"),
    [
        (None, "absent.safetensors", "no such upscaler file"),
        (b"not a model", "broken.safetensors", "not a supported upscaler model"),
        (b"\x80\x04garbage", "broken.pth", "not a supported upscaler model"),
        (b"hello", "notes.txt", "not a model file"),
    ],
)
def test_bad_model_files_are_a_model_load_error_naming_the_file(tmp_path, content, name, reason):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ModelLoadError, match=reason) as err:
        load_upscaler(str(path))
    assert name in str(err.value)


def test_a_model_that_is_not_an_upscaler_is_refused(tmp_path):
    import safetensors.torch

    path = tmp_path / "random.safetensors"
    safetensors.torch.save_file({"weight": torch.zeros(3, 3)}, path)
    with pytest.raises(ModelLoadError, match=r"random\.safetensors"):
        load_upscaler(str(path))


def test_dtype_choice_follows_the_model_flags_and_cpu_is_fp32():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert pick_upscale_dtype(cpu, True, True) == torch.float32
    assert pick_upscale_dtype(gpu, True, True) == torch.float16
    assert pick_upscale_dtype(gpu, False, True) == torch.bfloat16
    assert pick_upscale_dtype(gpu, False, False) == torch.float32
