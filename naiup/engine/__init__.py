"""Pixels and metadata in, pixels out. `Engine` is imported lazily: it pulls in torch."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from naiup.engine.result import EngineResult

if TYPE_CHECKING:
    from naiup.engine.engine import Engine

__all__ = ["Engine", "EngineResult"]


def __getattr__(name: str) -> Any:
    # Lazy so that `import naiup.metadata.read` (CLI info, daemon) does not load torch.
    if name == "Engine":
        from naiup.engine.engine import Engine

        return Engine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
