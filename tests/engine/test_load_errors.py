"""Loaders explain what a library says about a model file, and let our own bugs through as bugs."""

from __future__ import annotations

import json

import pytest
import spandrel
import torch
from PIL import Image

from naiup.engine.load_errors import explain_load_errors, is_foreign
from naiup.engine.models import load as load_module
from naiup.engine.models.checkpoints import read_state_dict
from naiup.engine.models.load import load_vae
from naiup.engine.upscale.upscaler import Upscaler, load_upscaler
from naiup.errors import ModelLoadError


def test_a_truncated_safetensors_file_is_advice_naming_the_file(tmp_path):
    from safetensors.torch import save_file

    f = tmp_path / "cut.safetensors"
    save_file({"w": torch.zeros(64)}, f)
    f.write_bytes(f.read_bytes()[:-40])
    with pytest.raises(ModelLoadError, match=r"cut\.safetensors: not a readable \.safetensors file") as info:
        read_state_dict(f)
    assert info.value.__cause__ is not None  # the library's own error stays chained, for the log


def test_an_error_a_library_raises_becomes_advice_with_its_text(tmp_path):
    explained = explain_load_errors(tmp_path / "m.bin", "cannot load ({kind}: {exc})")
    with pytest.raises(ModelLoadError, match=r"m\.bin: cannot load \(JSONDecodeError: Expecting"), explained:
        json.loads("{")  # a ValueError from the standard library, not from naiup


def test_a_value_error_of_our_own_code_is_a_bug_not_advice():
    # The same type as above, raised by naiup itself: calling our code wrongly is our bug.
    explained = explain_load_errors("model.safetensors", "cannot load: {exc}")
    with pytest.raises(ValueError, match="upscale wants an RGB image"), explained:
        Upscaler(name="x", scale=1).upscale(Image.new("L", (4, 4)), 2.0)


def test_a_type_error_inside_a_loader_is_not_disguised_as_a_bad_vae(tmp_path, monkeypatch):
    vae = tmp_path / "anime.vae.safetensors"
    vae.write_bytes(b"not read")

    def buggy_read(path):  # stands for a bug in our own reading code, inside the explained block
        raise TypeError("read_state_dict() got an unexpected keyword argument 'device'")

    monkeypatch.setattr(load_module, "read_state_dict", buggy_read)
    with pytest.raises(TypeError, match="unexpected keyword"):
        load_vae(str(vae))


def test_spandrel_rejecting_weights_is_advice_but_calling_it_wrong_is_a_bug(monkeypatch):
    def unsupported(self, state):
        raise spandrel.UnsupportedModelError("no architecture matches these keys")

    monkeypatch.setattr(spandrel.ModelLoader, "load_from_state_dict", unsupported)
    with pytest.raises(ModelLoadError, match=r"realcugan-2x: not a supported upscaler model \(Unsupported"):
        load_upscaler("realcugan-2x")

    def called_wrong(self, state):
        raise TypeError("load_from_state_dict() missing 1 required positional argument")

    monkeypatch.setattr(spandrel.ModelLoader, "load_from_state_dict", called_wrong)
    with pytest.raises(TypeError, match="missing 1 required"):
        load_upscaler("realcugan-2x")


def test_which_errors_count_as_foreign():
    def raised(exc: Exception) -> Exception:
        try:
            raise exc
        except Exception as caught:
            return caught

    assert is_foreign(raised(FileNotFoundError("gone")))  # OSError: the file system's say
    assert is_foreign(raised(ValueError("shape")))  # raised here, in a test: not naiup's code
    assert not is_foreign(raised(TypeError("called wrong")))
    assert not is_foreign(raised(AttributeError("no such attribute")))
    assert not is_foreign(raised(ModelLoadError("m", "already advice")))
