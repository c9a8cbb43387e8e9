"""What the model libraries print on their own while naiup loads a model, and which of it we silence.

    quiet_libraries()    call before a load; cheap, and safe to call again

naiup says what matters about a model in its own words (the status line, the refine bar, one error
line naming the file); the libraries' own output would come first on stderr and in the service log,
and it talks about arguments the user never passes. Silenced, each by its exact text so that every
other warning of these libraries still shows:
- diffusers' and transformers' per-component progress bars (they interleave with `naiup refine`'s
  bar; our hub downloads report through hub.py's counter instead);
- huggingface_hub's UserWarning that `local_dir_use_symlinks` is deprecated: diffusers' load_config
  passes that argument to hf_hub_download itself (naiup never does), so the user cannot act on it;
- diffusers' "Couldn't connect to the Hub: ... Will try to load from local cache." (a logger warning
  of diffusers.pipelines.pipeline_utils): when the model is not cached either, the error that follows
  says it, and errors.plain_message turns that into our advice; when it is cached, the load works.
"""

from __future__ import annotations

import logging
import warnings

_SYMLINKS_WARNING = r"The `local_dir_use_symlinks` argument is deprecated"
_PIPELINE_LOGGER = "diffusers.pipelines.pipeline_utils"
_HUB_UNREACHABLE = "Couldn't connect to the Hub:"


class _DropHubUnreachable(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(_HUB_UNREACHABLE)


def quiet_libraries() -> None:
    """Silence the library output described above. Installed again at every call, not once: a library
    (or a test harness) may have reset the warning filters or switched the bars back on since."""
    _quiet_bars()
    # filterwarnings replaces an identical filter instead of adding a second one.
    warnings.filterwarnings("ignore", message=_SYMLINKS_WARNING, category=UserWarning)
    logger = logging.getLogger(_PIPELINE_LOGGER)
    if not any(isinstance(f, _DropHubUnreachable) for f in logger.filters):
        logger.addFilter(_DropHubUnreachable())


def _quiet_bars() -> None:
    from diffusers.utils import logging as diffusers_logging
    from huggingface_hub.utils import are_progress_bars_disabled, enable_progress_bars
    from transformers.utils import logging as transformers_logging

    hub_bars = not are_progress_bars_disabled()
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()  # also turns the hub's bars off: give those back
    if hub_bars:
        enable_progress_bars()
