"""`LyricsLLM` — writes structured lyrics from a description prompt.

Engines (`lyrics.engine`):
- `template`: the weight-free writer (pipeline/lyrics.py); the embedded default.
- `openai`, `mlx`, `vllm`: an LLM behind the `ChatEngine` seam (pipeline/engines/chat.py),
  asked with the prompt of pipeline/lyrics_prompt.py (the plan for the duration, the language, the
  user's text as delimited data, no tools).

What an LLM writes is repaired in code (`repair_lyrics`); an unusable answer earns one stricter
retry naming what was wrong; then — or when the engine fails after its own retries — the template
writer takes over and the result says why (`fallback_reason`, kept in the song record). So every
answer has a verse and a chorus and grows with duration, whatever the engine.

Concurrency, per engine: `template` is pure CPU work of milliseconds and re-entrant; `openai`
sends every request at once over a connection pool and the server batches; `vllm` submits every
request to its in-process engine, which batches continuously; `mlx` runs one generation at a time
on one thread (mlx-lm holds one set of weights and is not thread-safe), so its replica's
`max_ongoing_requests` only queues. Scale LLM engines with replicas, not concurrency.

LLM results are cached in the job store by (engine, model, prompt, style, duration, language,
seed); template results and fallbacks are not (they are free, and an outage must not stick).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pipeline.engines.chat import ChatEngine, LyricsEngineError, make_chat_engine
from pipeline.lyrics import LyricSection, format_lyrics

if TYPE_CHECKING:
    from serve.config import LyricsConfig, StorageConfig
    from serve.store import JobStore

logger = logging.getLogger("ray.serve")


@dataclass(frozen=True)
class WrittenLyrics:
    text: str
    sections: list[LyricSection]
    engine: str  # who wrote `text`: the LLM engine, or "template"
    model: str
    fallback_reason: str | None = None  # why the configured LLM's lyrics were not used
    repairs: list[str] = field(default_factory=list)  # what was fixed in the LLM's answer
    cached: bool = False


# The weight-free writer (pipeline/lyrics.py): the embedded default, and every LLM's fallback.
TEMPLATE_ENGINE = "template"
TEMPLATE_MODEL = "template-v1"


CACHE_NAMESPACE = "lyrics"
STYLE_CACHE_NAMESPACE = "style-rewrite"
ATTEMPTS = 2  # the first answer, then one stricter retry


class LyricsLLM:
    def __init__(self, config: LyricsConfig, storage: StorageConfig | None = None) -> None:
        """Load the configured engine; LLM results are cached in `storage`'s job store."""
        from serve.store import open_job_store

        self._config = config
        self._chat: ChatEngine | None = (
            None if config.engine == "template" else make_chat_engine(config)
        )
        self._cache: JobStore | None = None
        if self._chat is not None and config.cache and storage is not None:
            self._cache = open_job_store(storage)

    async def write(
        self,
        prompt: str,
        duration_s: float,
        *,
        style: str | None = None,
        language: str = "en",
        seed: int = 0,
    ) -> WrittenLyrics:
        if self._chat is None:
            return await self._write_template(prompt, duration_s, style, language, seed, None)
        key = _cache_key(self._chat, prompt, style or "", float(duration_s), language, seed)
        if self._cache is not None:
            hit = await self._cache.cache_get(CACHE_NAMESPACE, key)
            if hit is not None:
                return _from_cache(hit, self._chat)
        written = await self._write_with_llm(self._chat, prompt, duration_s, style, language, seed)
        if self._cache is not None and written.fallback_reason is None:
            await self._cache.cache_put(
                CACHE_NAMESPACE, key, {"text": written.text, "repairs": written.repairs}
            )
        return written

    async def rewrite_style(self, style: str) -> str | None:
        """The style description rewritten by the LLM as plain comma-separated music tags (for
        `tags.llm_rewrite`), or None when there is no LLM or it gave no usable answer. Cached."""
        from pipeline.lyrics_prompt import build_style_messages, clean_style_answer

        if self._chat is None or not style.strip():
            return None
        key = _cache_key(self._chat, style)
        if self._cache is not None:
            hit = await self._cache.cache_get(STYLE_CACHE_NAMESPACE, key)
            if hit is not None:
                return str(hit)
        try:
            answer = await self._chat.chat(
                build_style_messages(style),
                max_tokens=128,
                temperature=0.0,
                top_p=1.0,
                seed=0,
            )
        except LyricsEngineError as error:
            logger.warning("style rewrite failed, using the text as given: %s", error)
            return None
        rewritten = clean_style_answer(answer)
        if rewritten and self._cache is not None:
            await self._cache.cache_put(STYLE_CACHE_NAMESPACE, key, rewritten)
        return rewritten

    async def _write_with_llm(
        self,
        chat: ChatEngine,
        prompt: str,
        duration_s: float,
        style: str | None,
        language: str,
        seed: int,
    ) -> WrittenLyrics:
        from pipeline.lyrics_prompt import build_lyrics_messages, repair_lyrics
        from pipeline.tags import normalize_style

        tags = normalize_style(style, language=language) if style else None
        problems: list[str] | None = None
        reason = ""
        for attempt in range(ATTEMPTS):
            messages = build_lyrics_messages(
                prompt,
                duration_s=duration_s,
                language=language,
                style=style,
                tags=tags,
                problems=problems,
            )
            try:
                answer = await chat.chat(
                    messages,
                    max_tokens=self._config.max_tokens,
                    temperature=self._config.temperature,
                    top_p=self._config.top_p,
                    seed=seed + attempt,
                )
            except LyricsEngineError as error:
                reason = str(error)
                break
            check = repair_lyrics(answer, duration_s)
            if check.usable:
                return WrittenLyrics(
                    text=format_lyrics(check.sections),
                    sections=check.sections,
                    engine=chat.name,
                    model=chat.model,
                    repairs=check.repairs,
                )
            problems = check.problems
            reason = f"answer {attempt + 1} of {ATTEMPTS} unusable: " + "; ".join(problems)
        fallback = f"{chat.name} ({chat.model}): {reason}"
        logger.warning("lyrics fell back to the template writer: %s", fallback)
        from serve.metrics import song_metrics

        song_metrics().lyrics_fallbacks.inc(tags={"engine": chat.name})
        return await self._write_template(prompt, duration_s, style, language, seed, fallback)

    async def _write_template(
        self,
        prompt: str,
        duration_s: float,
        style: str | None,
        language: str,
        seed: int,
        fallback_reason: str | None,
    ) -> WrittenLyrics:
        from pipeline.lyrics import write_template_lyrics

        # Pure CPU work of a few milliseconds: no thread hop needed.
        sections = write_template_lyrics(
            prompt, duration_s, style=style, language=language, seed=seed
        )
        return WrittenLyrics(
            text=format_lyrics(sections),
            sections=sections,
            engine=TEMPLATE_ENGINE,
            model=TEMPLATE_MODEL,
            fallback_reason=fallback_reason,
        )

    async def check_health(self) -> None:
        # An LLM engine is checked by loading it; a generation per health check would cost a
        # slot of real work, and a failing server is covered by the template fallback.
        if self._chat is None:
            await self._write_template("health check", 10.0, None, "en", 0, None)

    async def close(self) -> None:
        """Free the engine (connections, threads, device memory) and the cache's store."""
        chat, cache = self._chat, self._cache
        self._chat = self._cache = None
        if chat is not None:
            await chat.close()
        if cache is not None:
            await cache.close()

    async def __del__(self) -> None:
        # Serve awaits an async __del__ on graceful shutdown.
        await self.close()


def _cache_key(chat: ChatEngine, *inputs: object) -> str:
    """The cache key of what `chat` answers for `inputs` (JSON-serialisable values)."""
    return hashlib.sha256(json.dumps([chat.name, chat.model, *inputs]).encode()).hexdigest()


def _from_cache(hit: dict, chat: ChatEngine) -> WrittenLyrics:
    from pipeline.lyrics import parse_lyrics

    sections = parse_lyrics(hit["text"])
    return WrittenLyrics(
        text=hit["text"],
        sections=sections,
        engine=chat.name,
        model=chat.model,
        repairs=list(hit.get("repairs", [])),
        cached=True,
    )
