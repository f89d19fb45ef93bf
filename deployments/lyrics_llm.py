"""`LyricsLLM` — writes structured lyrics from a description prompt.

The engine sits behind `LyricsEngine`; `template` is the weight-free embedded default. LLM engines
(vLLM, mlx-lm, OpenAI-compatible servers) plug in behind the same interface.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from pipeline.lyrics import LyricSection, format_lyrics

if TYPE_CHECKING:
    from serve.config import LyricsConfig


@dataclass(frozen=True)
class WrittenLyrics:
    text: str
    sections: list[LyricSection]
    engine: str
    model: str


ChatMessage = dict[str, str]
"""{"role": "system" | "user" | "assistant", "content": "..."} as in OpenAI's chat API."""


class LyricsEngineError(RuntimeError):
    """An LLM engine could not produce an answer (server down, retries exhausted, timeout, bad
    response). The message names the engine, the model and the cause; the writer falls back to
    the template engine and records it."""


class ChatEngine(Protocol):
    """An LLM that answers a chat: the seam between the lyrics writer and vLLM, mlx-lm or an
    OpenAI-compatible server. No tools, no functions: text in, text out."""

    name: str  # "openai", "mlx" or "vllm"
    model: str  # the model as configured (path or served name)

    async def chat(
        self,
        messages: list[ChatMessage],
        *,
        max_tokens: int,
        temperature: float,
        top_p: float,
        seed: int,
    ) -> str:
        """The assistant's answer to `messages`. Raises LyricsEngineError when none can be had."""
        ...

    async def close(self) -> None:
        """Release connections, threads and device memory."""
        ...


class LyricsEngine(Protocol):
    name: str
    model: str

    async def write(
        self, prompt: str, duration_s: float, *, style: str | None, language: str, seed: int
    ) -> list[LyricSection]: ...


class TemplateLyricsEngine:
    """Weight-free writer: the prompt's own words poured into section templates."""

    name = "template"
    model = "template-v1"

    async def write(
        self, prompt: str, duration_s: float, *, style: str | None, language: str, seed: int
    ) -> list[LyricSection]:
        from pipeline.lyrics import write_template_lyrics

        # Pure CPU work of a few milliseconds: no thread hop needed.
        return write_template_lyrics(prompt, duration_s, style=style, language=language, seed=seed)


def make_lyrics_engine(config: LyricsConfig) -> LyricsEngine:
    if config.engine == "template":
        return TemplateLyricsEngine()
    raise ValueError(f"lyrics.engine: unknown engine {config.engine!r}")


class LyricsLLM:
    """Serialises nothing: the template engine is cheap and re-entrant, so requests run
    concurrently up to the deployment's `max_ongoing_requests`."""

    def __init__(self, config: LyricsConfig) -> None:
        self._engine = make_lyrics_engine(config)

    async def write(
        self,
        prompt: str,
        duration_s: float,
        *,
        style: str | None = None,
        language: str = "en",
        seed: int = 0,
    ) -> WrittenLyrics:
        sections = await self._engine.write(
            prompt, duration_s, style=style, language=language, seed=seed
        )
        return WrittenLyrics(
            text=format_lyrics(sections),
            sections=sections,
            engine=self._engine.name,
            model=self._engine.model,
        )

    async def check_health(self) -> None:
        await self._engine.write("health check", 10.0, style=None, language="en", seed=0)
