"""The chat seam between the lyrics writer and an LLM (vLLM, mlx-lm or an OpenAI-compatible
server), and the factory that picks one by `lyrics.engine`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from serve.config import LyricsConfig

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


def make_chat_engine(config: LyricsConfig) -> ChatEngine:
    """The LLM of `lyrics.engine` (not 'template'); imports its library only now."""
    if config.engine == "openai":
        from .chat_openai import OpenAIChatEngine

        return OpenAIChatEngine(config)
    if config.engine == "mlx":
        from .chat_mlx import MlxChatEngine

        return MlxChatEngine(config)
    if config.engine == "vllm":
        from .chat_vllm import VllmChatEngine

        return VllmChatEngine(config)
    raise ValueError(f"lyrics.engine: {config.engine!r} is not an LLM engine")
