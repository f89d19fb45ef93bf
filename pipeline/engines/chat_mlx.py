"""`MlxChatEngine` — the lyrics LLM run in process by mlx-lm (Apple Silicon, or Linux CPU with
`mlx[cpu]`), behind the `ChatEngine` seam of `pipeline.engines.chat`.

How requests are served: NOT batched, serialised. One engine holds one set of weights and mlx-lm
is not thread-safe, so every mlx call — loading, the chat template, prefill, decoding — runs on
ONE dedicated worker thread (a 1-thread `ThreadPoolExecutor`). Concurrent `chat` calls queue on
that thread in arrival order and run one after the other; the event loop only awaits them and
never blocks. A caller that is cancelled (e.g. a timeout) while its answer is being generated
stops it at the next token, so an abandoned request does not hold the thread for `max_tokens`.

Seeding: mlx's random state belongs to the thread that uses it, so each request seeds it
(`mx.random.seed(seed)`) on the worker thread right before sampling. Requests never interleave,
so the same messages, settings and seed give the same answer whatever ran before or alongside.
"""

from __future__ import annotations

import asyncio
import functools
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pipeline.engines.chat import ChatMessage, LyricsEngineError
from pipeline.lyrics_prompt import THINK_END, THINK_START, strip_thinking

if TYPE_CHECKING:
    from serve.config import LyricsConfig

FinishReason = Literal["stop", "length", "cancelled"]

# "org/name" as on the Hugging Face hub; anything else that does not exist is a missing path.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_FIX = (
    "point lyrics.model at a local Hugging Face-format model directory (e.g. one made by "
    "`mlx_lm.convert --hf-path Qwen/Qwen3-4B --mlx-path DIR -q`, or a hub id on a machine with "
    "internet), or build a tiny test model with `python scripts/make_tiny_qwen3.py DIR`"
)


@dataclass(frozen=True)
class MlxCompletion:
    """One generated answer and what it cost."""

    text: str  # the answer, thinking removed, surrounding whitespace stripped
    prompt_tokens: int  # tokens of the chat-formatted prompt
    completion_tokens: int  # tokens generated, counting the stop token when there was one
    finish_reason: FinishReason  # "stop": end-of-turn token; "length": max_tokens reached


def _unclosed_thinking(text: str, start: str, end: str) -> bool:
    return text.rfind(start) > text.rfind(end)


def _check_model_location(model: str) -> None:
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ValueError(
                f"lyrics.model: {path} has no config.json, so it is not a Hugging Face-format "
                f"model directory; {_FIX}"
            )
        return
    if not _HUB_ID.match(model):
        raise ValueError(f"lyrics.model: mlx model directory {path} does not exist; {_FIX}")


class MlxChatEngine:
    """`ChatEngine` over mlx-lm: loads `config.model` at construction (raising ValueError naming
    `lyrics.model` and the fix when it cannot), answers chats one at a time on its worker thread.
    Generation errors raise `LyricsEngineError` naming the engine, the model and the cause."""

    name = "mlx"

    def __init__(self, config: LyricsConfig) -> None:
        if not config.model:
            raise ValueError(f"lyrics.model: the mlx engine needs a model; {_FIX}")
        self.model: str = config.model
        _check_model_location(self.model)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlx-lm")
        self._closed = False
        self._in_flight: set[threading.Event] = set()  # cancel flags of queued/running requests
        try:
            # Loaded on the worker thread too: all of this engine's mlx work stays on one thread.
            self._lm, self._tokenizer = self._executor.submit(_load, self.model).result()
        except BaseException:
            self._executor.shutdown(wait=False, cancel_futures=True)
            raise
        self._think = (
            (self._tokenizer.think_start, self._tokenizer.think_end)
            if self._tokenizer.has_thinking
            else (THINK_START, THINK_END)
        )

    def prompt_tokens(self, messages: list[ChatMessage]) -> list[int]:
        """The token ids the model reads for `messages`: the tokenizer's chat template with an
        open assistant turn. Thinking is switched off where the template supports it (Qwen3
        then emits an empty think block and answers directly): lyrics need no reasoning trace,
        and it would eat into `max_tokens`. Raises LyricsEngineError once the engine is closed."""
        if self._tokenizer is None:
            raise self._error("the engine is closed")
        tokens = self._tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, enable_thinking=False
        )
        return list(tokens)

    async def chat(
        self,
        messages: list[ChatMessage],
        *,
        max_tokens: int,
        temperature: float,
        top_p: float,
        seed: int,
    ) -> str:
        """The assistant's answer to `messages` (see `complete`)."""
        completion = await self.complete(
            messages, max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed
        )
        return completion.text

    async def complete(
        self,
        messages: list[ChatMessage],
        *,
        max_tokens: int,
        temperature: float,
        top_p: float,
        seed: int,
    ) -> MlxCompletion:
        """Generate an answer of at most `max_tokens` tokens (≥ 1), stopping at the model's
        end-of-turn token; `temperature` 0 is greedy, `top_p` 1 disables nucleus sampling.
        Waits its turn behind earlier requests. Reasoning (`<think>…</think>`) is removed.

        Raises ValueError for `max_tokens` < 1, LyricsEngineError when the engine is closed,
        generation fails, or `max_tokens` ran out while the model was still thinking."""
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
        if self._closed:
            raise self._error("the engine is closed")
        cancel = threading.Event()
        job = functools.partial(
            self._generate,
            messages,
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            cancel=cancel,
        )
        self._in_flight.add(cancel)
        try:
            raw, completion = await asyncio.get_running_loop().run_in_executor(self._executor, job)
        except asyncio.CancelledError:
            cancel.set()  # stops the generation at its next token if it already started
            task = asyncio.current_task()
            if self._closed and task is not None and not task.cancelling():
                # Not our caller's cancellation: close() dropped this queued request.
                raise self._error("the engine was closed before the request ran") from None
            raise
        except RuntimeError as error:  # submitting to an executor that close() shut down
            if self._closed:
                raise self._error("the engine is closed") from error
            raise self._error(f"generation failed: {error}") from error
        except Exception as error:
            raise self._error(f"generation failed: {type(error).__name__}: {error}") from error
        finally:
            self._in_flight.discard(cancel)
        if completion.finish_reason == "cancelled":
            raise self._error("the engine was closed during generation")
        if completion.finish_reason == "length" and _unclosed_thinking(raw, *self._think):
            raise self._error(
                f"max_tokens={max_tokens} ran out while the model was still thinking; raise "
                "lyrics.max_tokens or use a model (or template) without thinking"
            )
        return completion

    async def close(self) -> None:
        """Stop the running generation at its next token, drop queued requests (they raise
        LyricsEngineError), wait for the worker thread to exit and release the weights."""
        if self._closed:
            return
        self._closed = True
        for cancel in list(self._in_flight):
            cancel.set()
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)
        self._lm = self._tokenizer = None

    def _error(self, cause: str) -> LyricsEngineError:
        return LyricsEngineError(f"mlx engine, model {self.model}: {cause}")

    def _generate(
        self,
        messages: list[ChatMessage],
        *,
        max_tokens: int,
        temperature: float,
        top_p: float,
        seed: int,
        cancel: threading.Event,
    ) -> tuple[str, MlxCompletion]:
        """Runs on the worker thread. Returns the raw text and the finished completion."""
        import mlx.core as mx
        from mlx_lm import stream_generate
        from mlx_lm.sample_utils import make_sampler

        prompt = self.prompt_tokens(messages)
        if cancel.is_set():
            return "", MlxCompletion("", len(prompt), 0, "cancelled")
        mx.random.seed(seed)
        # temp 0 gives mlx-lm's greedy sampler; top_p outside (0, 1) applies no nucleus cut.
        sampler = make_sampler(temp=temperature, top_p=top_p)
        pieces: list[str] = []
        generated = 0
        finish: FinishReason = "length"
        for response in stream_generate(
            self._lm, self._tokenizer, prompt, max_tokens=max_tokens, sampler=sampler
        ):
            pieces.append(response.text)
            generated = response.generation_tokens
            if response.finish_reason is not None:
                finish = "stop" if response.finish_reason == "stop" else "length"
            elif cancel.is_set():
                finish = "cancelled"
                break
        raw = "".join(pieces)
        text = strip_thinking(raw, *self._think)
        return raw, MlxCompletion(text, len(prompt), generated, finish)


def _load(model: str) -> tuple[Any, Any]:
    """`mlx_lm.load(model)`, with every failure turned into a ValueError naming the fix."""
    try:
        from mlx_lm import load
    except (ImportError, OSError) as error:  # OSError: plain `mlx` on Linux lacks libmlx.so
        raise ValueError(
            "lyrics.engine: the mlx engine needs mlx-lm: pip install mlx-lm "
            f"(on Linux also 'mlx[cpu]'): {type(error).__name__}: {error}"
        ) from error
    try:
        loaded = load(model)
    except Exception as error:
        raise ValueError(
            f"lyrics.model: mlx-lm could not load {model}: {type(error).__name__}: {error}; {_FIX}"
        ) from error
    return loaded[0], loaded[1]
