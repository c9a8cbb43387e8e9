"""The model libraries' own chatter on stderr is silenced where naiup loads models, and their
"not cached" error reads as our advice.

A new user's `naiup refine` printed huggingface_hub's `local_dir_use_symlinks` deprecation warning and
diffusers' "Couldn't connect to the Hub: ... Will try to load from local cache." before naiup's own
error line, and the error itself told them to pass `local_files_only=False`. The real library calls
run here, offline against an empty cache, so a new library version that words these differently
shows up as a failure rather than as noise for users.
"""

from __future__ import annotations

import logging
import warnings

import pytest
from hub_server import use_hub

from naiup.engine.models.library_noise import quiet_libraries
from naiup.errors import hub_model_unavailable, plain_message

REPO = "someone/not-cached"


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def diffusers_log():
    handler = _Records()
    logger = logging.getLogger("diffusers")  # diffusers' library root: its modules' records reach it
    logger.addHandler(handler)
    yield handler.messages
    logger.removeHandler(handler)


def test_an_uncached_hub_model_prints_no_library_noise_and_gets_our_advice(
    tmp_path, monkeypatch, diffusers_log
):
    from diffusers import DiffusionPipeline

    use_hub(monkeypatch, None, tmp_path / "hf")  # offline, empty cache
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")  # every warning shows: only our filter may hide one
        quiet_libraries()
        with pytest.raises(OSError):
            DiffusionPipeline.load_config(REPO)  # passes local_dir_use_symlinks to hf_hub_download
        with pytest.raises(OSError) as info:
            DiffusionPipeline.download(REPO)  # logs "Couldn't connect to the Hub", then raises
    assert [str(w.message) for w in seen if "local_dir_use_symlinks" in str(w.message)] == []
    assert [m for m in diffusers_log if "Couldn't connect" in m] == []
    assert "local_files_only" in str(info.value)  # the library's text, before plain_message
    text = plain_message(str(info.value))
    assert text == f"{REPO}: {hub_model_unavailable(REPO, offline=True)}"


def test_other_library_warnings_still_show(diffusers_log):
    quiet_libraries()
    logging.getLogger("diffusers.pipelines.pipeline_utils").warning("some other warning")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet_libraries()
        warnings.warn("The `foo` argument is deprecated", UserWarning, stacklevel=1)
    assert diffusers_log == ["some other warning"]
    assert [str(w.message) for w in seen] == ["The `foo` argument is deprecated"]
