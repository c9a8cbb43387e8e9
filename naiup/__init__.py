"""naiup: refine NovelAI images in the background."""

__version__ = "0.1.0"
