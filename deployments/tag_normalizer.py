"""`TagNormalizer` — free-text style → controlled tags and the caption each model takes, through
the tag engine `tags.engine` names (pipeline/engines/tags.py)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from pipeline.engines.tags import make_tag_engine
from pipeline.tags import StyleTags

if TYPE_CHECKING:
    from serve.config import TagsConfig


class TagNormalizer:
    def __init__(self, config: TagsConfig, lyrics: Any = None) -> None:
        """`lyrics`: the LyricsLLM handle when `tags.llm_rewrite` is on (its LLM rewrites the
        style into tags before they are matched)."""
        self._engine = make_tag_engine(config)
        self._lyrics = lyrics

    async def normalize(
        self, text: str | None, *, language: str = "en", instrumental: bool = False
    ) -> StyleTags:
        if self._lyrics is not None and text and text.strip():
            rewritten = await self._lyrics.rewrite_style.remote(text)
            text = rewritten or text  # None: no usable answer, so the user's words as given
        # Off the event loop: the semantic engine runs a sentence encoder (milliseconds of CPU).
        return await asyncio.to_thread(
            self._engine.normalize, text, language=language, instrumental=instrumental
        )

    async def check_health(self) -> None:
        self._engine.check_health()
