"""`OpenAIChatEngine` — a `ChatEngine` over any OpenAI-compatible `/v1/chat/completions` server
(vLLM, Ollama, LM Studio, a Ray Serve LLM app, OpenAI itself).

Plain HTTP through `httpx` rather than the openai SDK: the protocol surface used here is one route,
and owning the retry loop keeps retries, timeouts and error messages the same for every server.

Concurrency: `chat` is re-entrant. Each call is one HTTP request on a pooled keep-alive connection;
the server does the batching (vLLM's continuous batching, Ollama's parallel slots). The pool is
sized to at least the deployment's `max_ongoing_requests` so that no request queues here for a
connection: when the server is full, it is the server that should say so (429/503), which the
retry loop then handles.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from typing import TYPE_CHECKING, Any

import httpx

from pipeline.engines.chat import ChatMessage, LyricsEngineError
from pipeline.lyrics_prompt import THINK_START, strip_thinking

if TYPE_CHECKING:
    from serve.config import LyricsConfig

RETRYABLE_STATUS_CODES = frozenset({429, 500, 502, 503, 504})
"""Overload and gateway failures: another attempt may succeed. Other 4xx are the request's
fault and fail at once."""

MAX_RETRY_AFTER_S = 30.0
"""Longest `Retry-After` honoured: a server asking for minutes is better answered by the
writer's template fallback than by a song that waits."""

ERROR_EXCERPT_CHARS = 200


class OpenAIChatEngine:
    """Answers chats through an OpenAI-compatible server.

    `chat` returns the assistant's text: streamed deltas concatenated when `config.stream`, else
    the message content; reasoning is dropped, whether the server sent it apart
    (`reasoning_content`) or inline (`<think>…</think>`), and surrounding whitespace stripped.
    Raises `LyricsEngineError` when no answer can be had: retries exhausted on 429, 5xx,
    connection errors, timeouts and streams cut midway (each retried from scratch), or at once on
    other 4xx, malformed responses and empty answers.
    """

    name = "openai"

    def __init__(
        self,
        config: LyricsConfig,
        *,
        retry_base_delay_s: float = 0.5,
        retry_max_delay_s: float = 8.0,
        max_connections: int = 64,
    ) -> None:
        """`retry_base_delay_s` is the first backoff, doubled per attempt up to
        `retry_max_delay_s` (tests shorten both). `max_connections` should be at least the
        `max_ongoing_requests` of the deployment that owns this engine (lyrics 32, tags 64)."""
        if not config.model or not config.base_url:
            raise ValueError(
                "lyrics.engine 'openai' needs lyrics.model (the name the server serves) and "
                "lyrics.base_url (e.g. http://127.0.0.1:8001/v1)"
            )
        self.model: str = config.model
        self._url = config.base_url.rstrip("/") + "/chat/completions"
        # Credentials in the URL (http://user:pass@host) must not reach error messages either.
        self._display_url = str(httpx.URL(self._url).copy_with(username=None, password=None))
        self._stream = config.stream
        self._timeout_s = config.timeout_s
        self._max_retries = config.max_retries
        self._retry_base_delay_s = retry_base_delay_s
        self._retry_max_delay_s = retry_max_delay_s

        configured = config.api_key.get_secret_value() if config.api_key else None
        self._api_key = configured or os.environ.get(config.api_key_env) or None
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        self._client = httpx.AsyncClient(
            headers=headers,
            # Per phase (connect, each read, pool wait); `chat` also bounds the whole attempt,
            # since a stream that trickles tokens never trips a per-read timeout.
            timeout=httpx.Timeout(config.timeout_s),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
        )

    async def chat(
        self,
        messages: list[ChatMessage],
        *,
        max_tokens: int,
        temperature: float,
        top_p: float,
        seed: int,
    ) -> str:
        if self._client.is_closed:
            raise self._error("the engine is closed")
        body = {
            "model": self.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "top_p": top_p,
            "seed": seed,
            "stream": self._stream,
        }
        attempts = self._max_retries + 1
        for attempt in range(1, attempts + 1):
            try:
                async with asyncio.timeout(self._timeout_s):
                    return await self._request_answer(body)
            except _AttemptFailed as failed:
                failure = failed
            except (TimeoutError, httpx.TimeoutException):
                failure = _AttemptFailed(
                    f"timed out: no complete answer within timeout_s={self._timeout_s:g} s",
                    retryable=True,
                )
            except httpx.RequestError as error:
                # Refused or reset connections, and streams the server cut midway.
                failure = _AttemptFailed(
                    f"request failed ({type(error).__name__}: {error})", retryable=True
                )
            if not failure.retryable:
                raise self._error(failure.cause) from None
            if attempt == attempts:
                raise self._error(
                    f"gave up after {attempts} attempt{'s' if attempts > 1 else ''}; "
                    f"last: {failure.cause}"
                ) from None
            await asyncio.sleep(self._retry_delay_s(attempt, failure.retry_after_s))
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def close(self) -> None:
        """Close the connection pool. Later chats raise `LyricsEngineError`."""
        await self._client.aclose()

    async def _request_answer(self, body: dict[str, Any]) -> str:
        """One attempt: the answer, or `_AttemptFailed` / an `httpx.RequestError`."""
        async with self._client.stream("POST", self._url, json=body) as response:
            if not response.is_success:
                excerpt = await _error_excerpt(response)
                raise _AttemptFailed(
                    f"HTTP {response.status_code}" + (f": {excerpt}" if excerpt else ""),
                    retryable=response.status_code in RETRYABLE_STATUS_CODES,
                    retry_after_s=_retry_after_s(response.headers.get("retry-after")),
                )
            content_type = response.headers.get("content-type", "")
            # Some servers ignore `stream: true` and answer with one JSON document.
            if self._stream and "text/event-stream" in content_type:
                return await _read_event_stream(response)
            return _read_completion(await response.aread())

    def _retry_delay_s(self, attempt: int, retry_after_s: float | None) -> float:
        if retry_after_s is not None:
            return retry_after_s
        # Exponential backoff with "equal jitter": at least half the step, so retries still
        # back off, and a random other half, so replicas that failed together retry apart.
        step_s = min(self._retry_max_delay_s, self._retry_base_delay_s * 2 ** (attempt - 1))
        return step_s / 2 + random.uniform(0, step_s / 2)

    def _error(self, cause: str) -> LyricsEngineError:
        message = f"openai engine, model {self.model}, {self._display_url}: {cause}"
        if self._api_key:
            # A server may echo the request's headers in its error body.
            message = message.replace(self._api_key, "<api key>")
        return LyricsEngineError(message)


class _AttemptFailed(Exception):
    """One attempt got no answer; `retryable` says whether another attempt may do better."""

    def __init__(self, cause: str, *, retryable: bool, retry_after_s: float | None = None):
        super().__init__(cause)
        self.cause = cause
        self.retryable = retryable
        self.retry_after_s = retry_after_s


async def _read_event_stream(response: httpx.Response) -> str:
    """Concatenated `choices[0].delta.content` of an SSE stream up to `data: [DONE]`."""
    parts: list[str] = []
    finish_reason: str | None = None
    saw_reasoning = False
    async for line in response.aiter_lines():
        # Blank separators, `: keep-alive` comments and `event:`/`id:` fields carry no text.
        if not line.startswith("data:"):
            continue
        data = line[len("data:") :].strip()
        if data == "[DONE]":
            return _answer("".join(parts), finish_reason, saw_reasoning)
        try:
            chunk = json.loads(data)
            _raise_if_error_payload(chunk)
            choices = chunk.get("choices") or []  # the final usage chunk has none
            if not choices:
                continue
            delta = choices[0].get("delta") or {}
            saw_reasoning = saw_reasoning or bool(delta.get("reasoning_content"))
            text = delta.get("content")
            if text is not None and not isinstance(text, str):
                raise TypeError(f"delta.content is {type(text).__name__}")
            parts.append(text or "")
            finish_reason = choices[0].get("finish_reason") or finish_reason
        except (ValueError, TypeError, AttributeError) as error:
            raise _AttemptFailed(
                f"malformed stream chunk ({error}): {_excerpt(data)}", retryable=False
            ) from error
    if finish_reason is not None:
        # Finished but without the `[DONE]` sentinel, as a few servers do: the answer is whole.
        return _answer("".join(parts), finish_reason, saw_reasoning)
    raise _AttemptFailed("the stream ended before `data: [DONE]`", retryable=True)


def _read_completion(raw: bytes) -> str:
    """`choices[0].message.content` of a non-streamed completion."""
    try:
        payload = json.loads(raw)
        _raise_if_error_payload(payload)
        choice = payload["choices"][0]
        message = choice["message"]
        text = message.get("content")
        if text is not None and not isinstance(text, str):
            raise TypeError(f"message.content is {type(text).__name__}")
        reasoned = bool(message.get("reasoning_content"))
        return _answer(text or "", choice.get("finish_reason"), reasoned)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as error:
        raise _AttemptFailed(
            f"malformed response ({type(error).__name__}: {error}): "
            f"{_excerpt(raw.decode(errors='replace'))}",
            retryable=False,
        ) from error


def _answer(raw: str, finish_reason: str | None, saw_reasoning: bool) -> str:
    """The answer without reasoning: servers with no reasoning parser leave Qwen3-style
    `<think>…</think>` in the content, as mlx-lm does; the writer wants the lyrics alone."""
    text = strip_thinking(raw)
    if text:
        return text
    # Not retried: with the same seed the same prompt spends its budget the same way.
    hint = (
        "; the model spent max_tokens on reasoning: raise lyrics.max_tokens or turn thinking off"
        if saw_reasoning or THINK_START in raw
        else ""
    )
    raise _AttemptFailed(f"empty answer (finish_reason={finish_reason}){hint}", retryable=False)


def _raise_if_error_payload(payload: Any) -> None:
    """vLLM and others report a failure inside a 200 stream as `{"error": {...}}`."""
    if isinstance(payload, dict) and payload.get("error"):
        raise _AttemptFailed(
            f"server error in response: {_excerpt(_error_message(payload))}", retryable=False
        )


async def _error_excerpt(response: httpx.Response) -> str:
    raw = await response.aread()
    text = raw.decode(errors="replace")
    try:
        return _excerpt(_error_message(json.loads(text)))
    except ValueError:
        return _excerpt(text)


def _error_message(payload: Any) -> str:
    """The human part of OpenAI-style (`{"error": {"message"}}`), FastAPI-style (`{"detail"}`)
    and flat (`{"message"}`) error bodies."""
    if isinstance(payload, dict):
        error = payload.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        for key in ("error", "detail", "message"):
            if payload.get(key):
                return str(payload[key])
    return json.dumps(payload)


def _excerpt(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= ERROR_EXCERPT_CHARS else flat[: ERROR_EXCERPT_CHARS - 1] + "…"


def _retry_after_s(header: str | None) -> float | None:
    """`Retry-After` in seconds, capped; HTTP-date values fall back to the backoff."""
    if header is None:
        return None
    try:
        seconds = float(header)
    except ValueError:
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)
