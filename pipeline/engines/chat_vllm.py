"""`VllmChatEngine` — the lyrics LLM run in process by vLLM's async engine on a CUDA GPU, behind
the `ChatEngine` seam of `deployments.lyrics_llm`.

How requests are served: batched, concurrently. Every `chat` submits its own request (a unique
`request_id`) to one `vllm.v1.engine.async_llm.AsyncLLM`; vLLM's scheduler does continuous
batching, so requests that arrive while others are decoding join the running batch at the next
step instead of waiting for it to finish. Nothing here serialises or queues: the deployment's
`max_ongoing_requests` bounds how many are in flight, and the KV cache
(`lyrics.gpu_memory_utilization`, `lyrics.max_model_len`) bounds how many vLLM runs at once.

Written against vLLM's V1 API (`AsyncLLM.from_engine_args(AsyncEngineArgs(...))`,
`generate(prompt, SamplingParams, request_id)` as an async generator of `RequestOutput`,
`get_tokenizer()`, `shutdown()`), as in vLLM 0.10 onwards. vLLM is imported only when an engine
is built: it is CUDA-only, an optional extra (`songserve[gpu]`), and slow to import.
"""

from __future__ import annotations

import inspect
import uuid
from typing import TYPE_CHECKING, Any

from pipeline.engines.chat import ChatMessage, LyricsEngineError
from pipeline.lyrics_prompt import strip_thinking

if TYPE_CHECKING:
    from serve.config import LyricsConfig

_NO_CUDA = (
    "lyrics.engine 'vllm' needs a CUDA GPU: {reason}; use 'mlx' (Apple Silicon, or Linux CPU) "
    "or 'openai' (any OpenAI-compatible server, e.g. a vLLM server on a GPU machine) instead"
)


class VllmChatEngine:
    """`ChatEngine` over an in-process vLLM engine.

    Construction loads `config.model` onto the GPU, raising ValueError naming the setting to
    change when there is no CUDA GPU, no vLLM, or the model cannot be loaded. `chat` applies the
    model's chat template and returns the answer with any `<think>` reasoning removed; it raises
    `LyricsEngineError` (engine, model, cause) when generation fails or the engine is closed.
    """

    name = "vllm"

    def __init__(self, config: LyricsConfig, *, enforce_eager: bool = False) -> None:
        """`enforce_eager` skips CUDA-graph capture: a faster start (tests) for slower decoding."""
        if not config.model:
            raise ValueError(
                "lyrics.model: the vllm engine needs a model directory in Hugging Face format"
            )
        self.model: str = config.model
        _require_cuda()
        try:
            from vllm import SamplingParams
            from vllm.engine.arg_utils import AsyncEngineArgs
            from vllm.sampling_params import RequestOutputKind
            from vllm.v1.engine.async_llm import AsyncLLM
        except ImportError as error:
            raise ValueError(
                "lyrics.engine 'vllm' needs vLLM: pip install 'songserve[gpu]' on a CUDA "
                f"machine, or use 'mlx' or 'openai' ({type(error).__name__}: {error})"
            ) from error
        self._sampling_params_cls = SamplingParams
        # Only the finished answer is wanted: vLLM then skips building per-token outputs.
        self._final_only = RequestOutputKind.FINAL_ONLY
        engine_args = AsyncEngineArgs(
            model=self.model,
            dtype="auto",
            gpu_memory_utilization=config.gpu_memory_utilization,
            max_model_len=config.max_model_len,
            enforce_eager=enforce_eager,
        )
        try:
            self._engine: Any = AsyncLLM.from_engine_args(engine_args)
        except Exception as error:
            raise ValueError(
                f"lyrics.model: vLLM could not load {self.model} "
                f"({type(error).__name__}: {error}); check the directory, or lower "
                "lyrics.max_model_len / raise lyrics.gpu_memory_utilization if the KV cache "
                "does not fit"
            ) from error
        self._tokenizer: Any = None
        self._closed = False

    async def chat(
        self,
        messages: list[ChatMessage],
        *,
        max_tokens: int,
        temperature: float,
        top_p: float,
        seed: int,
    ) -> str:
        if self._closed:
            raise self._error("the engine is closed")
        request_id = f"lyrics-{uuid.uuid4().hex}"
        try:
            prompt = await self._prompt(messages)
            sampling_params = self._sampling_params_cls(
                max_tokens=max_tokens,
                temperature=temperature,
                top_p=top_p,
                seed=seed,
                output_kind=self._final_only,
            )
            final = None
            # Concurrent chats are separate requests in flight together: vLLM's scheduler
            # batches them continuously on the GPU.
            async for output in self._engine.generate(prompt, sampling_params, request_id):
                final = output
        except Exception as error:
            raise self._error(f"generation failed: {_describe(error)}") from error
        if final is None or not final.outputs:
            raise self._error(f"request {request_id} finished without an output")
        completion = final.outputs[0]
        text = strip_thinking(completion.text)
        if not text:
            raise self._error(
                f"empty answer (finish_reason={completion.finish_reason}); if the model spent "
                "max_tokens thinking, raise lyrics.max_tokens"
            )
        return text

    async def close(self) -> None:
        """Stop the engine-core process and free its GPU memory. Later chats raise."""
        if self._closed:
            return
        self._closed = True
        self._engine.shutdown()
        self._engine = self._tokenizer = None

    async def _prompt(self, messages: list[ChatMessage]) -> dict[str, list[int]]:
        """The chat-formatted prompt as token ids. Thinking is switched off where the template
        supports it (Qwen3): lyrics need no reasoning trace, and it would eat into max_tokens.

        Tokenized here without special tokens, as vLLM's own chat route does: the template
        already wrote them, and tokenizing the text again with them would add a second BOS."""
        if self._tokenizer is None:
            tokenizer = self._engine.get_tokenizer()
            # A coroutine in vLLM up to 0.10, a plain method since.
            self._tokenizer = await tokenizer if inspect.isawaitable(tokenizer) else tokenizer
        text = self._tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, enable_thinking=False
        )
        return {"prompt_token_ids": self._tokenizer.encode(text, add_special_tokens=False)}

    def _error(self, cause: str) -> LyricsEngineError:
        return LyricsEngineError(f"vllm engine, model {self.model}: {cause}")


def _require_cuda() -> None:
    try:
        import torch
    except ImportError as error:
        raise ValueError(_NO_CUDA.format(reason=f"torch is not installed ({error})")) from error
    if not torch.cuda.is_available():
        raise ValueError(_NO_CUDA.format(reason="torch sees no CUDA device here"))


def _describe(error: BaseException) -> str:
    """`Type: message`, with the cause: vLLM wraps request failures in a bare
    `EngineGenerateError` whose own message is empty."""
    described = f"{type(error).__name__}: {error}".rstrip(": ")
    if error.__cause__ is not None:
        described += f" (caused by {type(error.__cause__).__name__}: {error.__cause__})"
    return described
