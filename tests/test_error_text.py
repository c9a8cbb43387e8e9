"""Errors quoted from diffusers / huggingface_hub lose their boilerplate before a user reads them."""

from __future__ import annotations

import pytest

from naiup.errors import ModelLoadError, hub_model_unavailable, plain_message

SD = "stable-diffusion-v1-5/stable-diffusion-v1-5"
# As diffusers 0.35 words it when a hub model is not cached and the Hub cannot be reached.
DIFFUSERS = (
    f"Cannot load model {SD}: the model is not fully cached locally "
    "(We couldn't connect to 'https://huggingface.co' to load this model, couldn't find it in the cached "
    f"files and it looks like {SD} is not the path to a directory "
    "containing a file named model_index.json.\nCheckout your internet connection or see how to run the "
    "library in offline mode at 'https://huggingface.co/docs/diffusers/installation#offline-mode'.) and an "
    "error occurred while trying to fetch metadata from the Hub. Please check out the root cause in the "
    "stacktrace above."
)
# As a new user saw it in `naiup status` (engine_error) and `naiup refine` with a newer diffusers and
# huggingface_hub: the cause quoted is the hub's `local_files_only` advice.
DIFFUSERS_LOCAL_ONLY = (
    f"Cannot load model {SD}: the model is not fully cached locally (Cannot find an appropriate cached "
    "snapshot folder for the specified revision on the local disk and outgoing traffic has been "
    "disabled. To enable repo look-ups and downloads online, pass 'local_files_only=False' as input.) "
    "and an error occurred while trying to fetch metadata from the Hub. Please check out the root cause "
    "in the stacktrace above."
)


@pytest.mark.parametrize("text", [DIFFUSERS, DIFFUSERS_LOCAL_ONLY], ids=["couldnt-connect", "local-only"])
@pytest.mark.parametrize("offline", ["1", ""])
def test_diffusers_not_cached_error_becomes_our_advice(text, offline, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", offline)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    plain = plain_message(text)
    # The same words our own hub fetch uses (engine/models/hub.py), with its ways out.
    assert plain == f"{SD}: {hub_model_unavailable(SD, offline=bool(offline))}"
    for library_talk in ("local_files_only", "stacktrace", "fetch metadata", "Checkout your internet"):
        assert library_talk not in plain
    assert f"`hf download {SD}`" in plain and "`naiup preset upscale-2x`" in plain
    assert "`--preset upscale-2x` for `naiup refine`" in plain  # the foreground command has no `naiup preset`
    assert ("HF_HUB_OFFLINE is set" in plain) == bool(offline)


def test_hub_boilerplate_and_the_stacktrace_pointer_are_dropped():
    text = plain_message(
        "cannot load this VAE: We couldn't connect to 'https://huggingface.co' to load this model, couldn't "
        "find it in the cached files.\nCheckout your internet connection or see how to run the library in "
        "offline mode at 'https://huggingface.co/docs/diffusers/installation#offline-mode'. Please check "
        "out the root cause in the stacktrace above."
    )
    assert text == (
        "cannot load this VAE: not in the local Hugging Face cache, and the Hub could not be reached."
    )


def test_the_hub_local_files_only_advice_is_ours():
    text = plain_message(
        "someone/x: Cannot find the requested files in the disk cache and outgoing traffic has been "
        "disabled. To enable hf.co look-ups and downloads online, set 'local_files_only' to False."
    )
    assert text == "someone/x: not in the local Hugging Face cache, and downloading is switched off."


def test_a_model_load_error_quoting_diffusers_reads_plainly():
    exc = ModelLoadError(SD, f"cannot load this model: {DIFFUSERS}")
    assert "stacktrace above" not in str(exc) and "offline-mode" not in str(exc)
    assert plain_message("file not found: /m/x.safetensors") == "file not found: /m/x.safetensors"
