"""One Ray Serve deployment role per module, as plain classes; `serve.app` applies the options."""

from .conductor import Conductor
from .decoder import SongDecoder
from .lyrics_llm import LyricsLLM
from .post_processor import PostProcessor
from .song_router import SongRouter
from .tag_normalizer import TagNormalizer

__all__ = ["Conductor", "LyricsLLM", "PostProcessor", "SongDecoder", "SongRouter", "TagNormalizer"]
