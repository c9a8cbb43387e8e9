"""Errors quoted from diffusers / huggingface_hub lose their boilerplate before a user reads them."""

from __future__ import annotations

from naiup.errors import ModelLoadError, plain_message

# As diffusers 0.35 words it when a hub model is not cached and the Hub cannot be reached.
DIFFUSERS = (
    "Cannot load model stable-diffusion-v1-5/stable-diffusion-v1-5: the model is not fully cached locally "
    "(We couldn't connect to 'https://huggingface.co' to load this model, couldn't find it in the cached "
    "files and it looks like stable-diffusion-v1-5/stable-diffusion-v1-5 is not the path to a directory "
    "containing a file named model_index.json.\nCheckout your internet connection or see how to run the "
    "library in offline mode at 'https://huggingface.co/docs/diffusers/installation#offline-mode'.) and an "
    "error occurred while trying to fetch metadata from the Hub. Please check out the root cause in the "
    "stacktrace above."
)


def test_hub_boilerplate_and_the_stacktrace_pointer_are_dropped():
    text = plain_message(DIFFUSERS)
    assert "stacktrace" not in text and "Checkout your internet" not in text and "\n" not in text
    assert "We couldn't connect" not in text
    assert text.startswith("Cannot load model stable-diffusion-v1-5/stable-diffusion-v1-5:")
    assert "not in the local Hugging Face cache, and the Hub could not be reached" in text


def test_a_model_load_error_quoting_diffusers_reads_plainly():
    exc = ModelLoadError(
        "stable-diffusion-v1-5/stable-diffusion-v1-5", f"cannot load this model: {DIFFUSERS}"
    )
    assert "stacktrace above" not in str(exc) and "offline-mode" not in str(exc)
    assert plain_message("file not found: /m/x.safetensors") == "file not found: /m/x.safetensors"
