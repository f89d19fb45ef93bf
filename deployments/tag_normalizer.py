"""`TagNormalizer` — free-text style → controlled tags and the caption each model takes.

The lexical matcher (`pipeline.tags.normalize_style`) is the embedded default; semantic matching
plugs in behind `TagEngine`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from pipeline.tags import StyleTags

if TYPE_CHECKING:
    from serve.config import TagsConfig


class TagEngine(Protocol):
    name: str

    def normalize(self, text: str | None, *, language: str, instrumental: bool) -> StyleTags: ...


class LexicalTagEngine:
    name = "lexical"

    def normalize(self, text: str | None, *, language: str, instrumental: bool) -> StyleTags:
        from pipeline.tags import normalize_style

        return normalize_style(text, language=language, instrumental=instrumental)


def make_tag_engine(config: TagsConfig) -> TagEngine:
    if config.engine == "lexical":
        return LexicalTagEngine()
    raise ValueError(f"tags.engine: unknown engine {config.engine!r}")


class TagNormalizer:
    def __init__(self, config: TagsConfig) -> None:
        self._engine = make_tag_engine(config)

    async def normalize(
        self, text: str | None, *, language: str = "en", instrumental: bool = False
    ) -> StyleTags:
        return self._engine.normalize(text, language=language, instrumental=instrumental)

    async def check_health(self) -> None:
        self._engine.normalize("pop", language="en", instrumental=False)
