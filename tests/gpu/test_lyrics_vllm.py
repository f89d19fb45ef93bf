"""VllmChatEngine on a tiny random Qwen3 (scripts/make_tiny_qwen3.py): the real vLLM load, chat
template and generate paths on a CUDA GPU. The model's answers are random tokens, so tests assert
structure — types, completion of concurrent requests, errors — never words."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

import pytest

from pipeline.engines.chat import ChatMessage, LyricsEngineError
from pipeline.engines.chat_vllm import VllmChatEngine
from pipeline.tiny.qwen3 import build_tiny_qwen3
from serve.config import LyricsConfig

MESSAGES: list[ChatMessage] = [
    {"role": "system", "content": "You write song lyrics with [verse] and [chorus] tags."},
    {"role": "user", "content": "A summer song about the sea."},
]


def _cuda_available() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def _why_no_vllm_run() -> str | None:
    # vLLM first: without it there is no need to import torch at collection.
    if importlib.util.find_spec("vllm") is None:
        return "vLLM is not installed (pip install 'songserve[gpu]' on a CUDA machine)"
    if not _cuda_available():
        return "no CUDA GPU"
    return None


NO_VLLM_RUN = _why_no_vllm_run()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_qwen3(tmp_path_factory.mktemp("tiny-qwen3") / "model")


async def ask(engine: VllmChatEngine, seed: int) -> str:
    return await engine.chat(MESSAGES, max_tokens=16, temperature=0.7, top_p=0.9, seed=seed)


@pytest.mark.gpu
@pytest.mark.skipif(NO_VLLM_RUN is not None, reason=NO_VLLM_RUN or "")
def test_chat_answers_and_concurrent_chats_both_complete(model_dir: Path) -> None:
    config = LyricsConfig(
        engine="vllm", model=str(model_dir), gpu_memory_utilization=0.2, max_model_len=512
    )

    # One event loop for the engine's whole life: AsyncLLM binds its output task to the loop
    # of the first request.
    async def scenario() -> tuple[str, list[str]]:
        engine = VllmChatEngine(config, enforce_eager=True)
        try:
            assert engine.name == "vllm" and engine.model == str(model_dir)
            alone = await ask(engine, seed=1)
            together = await asyncio.gather(ask(engine, seed=2), ask(engine, seed=3))
        finally:
            await engine.close()
        with pytest.raises(LyricsEngineError, match="closed"):
            await ask(engine, seed=4)
        return alone, list(together)

    alone, together = asyncio.run(scenario())
    assert isinstance(alone, str) and alone
    assert len(together) == 2
    assert all(isinstance(answer, str) and answer for answer in together)


@pytest.mark.skipif(_cuda_available(), reason="runs where there is no CUDA GPU")
def test_without_cuda_the_engine_names_the_setting_and_the_alternatives(tmp_path: Path) -> None:
    config = LyricsConfig(engine="vllm", model=str(tmp_path))
    with pytest.raises(ValueError, match="needs a CUDA GPU") as raised:
        VllmChatEngine(config)
    message = str(raised.value)
    assert "lyrics.engine 'vllm'" in message
    assert "'mlx'" in message and "'openai'" in message
