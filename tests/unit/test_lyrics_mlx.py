"""MlxChatEngine on a tiny random Qwen3 (scripts/make_tiny_qwen3.py): the real mlx-lm load and
generate paths on CPU. The model's answers are random tokens, so tests assert structure —
types, token counts, determinism, the chat template, serialisation — never words."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.engines.chat import ChatEngine, LyricsEngineError
from pipeline.engines.chat_mlx import MlxChatEngine
from pipeline.lyrics_prompt import strip_thinking
from pipeline.tiny.qwen3 import build_tiny_qwen3, is_complete
from serve.config import LyricsConfig

try:
    import mlx_lm  # noqa: F401
except (ImportError, OSError) as error:  # OSError: plain `mlx` on Linux lacks libmlx.so
    pytest.skip(f"mlx-lm cannot be imported: {error}", allow_module_level=True)

MESSAGES = [
    {"role": "system", "content": "You write song lyrics with [verse] and [chorus] tags."},
    {"role": "user", "content": "A summer song about the sea, in Spanish."},
]
SAMPLING: dict[str, Any] = {"temperature": 0.7, "top_p": 0.9}
GREEDY: dict[str, Any] = {"temperature": 0.0, "top_p": 1.0}
LONG = 600  # tokens: well under a second of CPU for the tiny model


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_qwen3(tmp_path_factory.mktemp("tiny-qwen3") / "model")


@pytest.fixture(scope="module")
def engine(model_dir: Path) -> Iterator[MlxChatEngine]:
    engine = MlxChatEngine(LyricsConfig(engine="mlx", model=str(model_dir)))
    yield engine
    run(engine.close())


def test_builder_writes_a_complete_idempotent_model(model_dir: Path) -> None:
    assert is_complete(model_dir)
    weights = model_dir / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert build_tiny_qwen3(model_dir) == model_dir  # already complete: nothing rewritten
    assert weights.stat().st_mtime_ns == stamp
    size = sum(f.stat().st_size for f in model_dir.rglob("*") if f.is_file())
    assert size < 2_000_000


def test_engine_satisfies_the_chat_engine_seam(engine: MlxChatEngine, model_dir: Path) -> None:
    seam: ChatEngine = engine
    assert (seam.name, seam.model) == ("mlx", str(model_dir))


def test_chat_returns_text(engine: MlxChatEngine) -> None:
    answer = run(engine.chat(MESSAGES, max_tokens=16, seed=1, **SAMPLING))
    assert isinstance(answer, str)


def test_same_seed_gives_the_same_answer(engine: MlxChatEngine) -> None:
    async def scenario() -> list[str]:
        return [await engine.chat(MESSAGES, max_tokens=24, seed=s, **SAMPLING) for s in (7, 7, 8)]

    first, again, other_seed = run(scenario())
    assert first == again
    answers = {first, other_seed}
    answers |= {run(engine.chat(MESSAGES, max_tokens=24, seed=s, **SAMPLING)) for s in (9, 10)}
    assert len(answers) > 1  # the seed really drives sampling


def test_greedy_ignores_the_seed(engine: MlxChatEngine) -> None:
    answers = {run(engine.chat(MESSAGES, max_tokens=12, seed=s, **GREEDY)) for s in (1, 2, 3)}
    assert len(answers) == 1


@pytest.mark.parametrize("max_tokens", [1, 5, 40])
def test_max_tokens_bounds_the_answer(engine: MlxChatEngine, max_tokens: int) -> None:
    completion = run(engine.complete(MESSAGES, max_tokens=max_tokens, seed=3, **SAMPLING))
    assert 1 <= completion.completion_tokens <= max_tokens
    if completion.finish_reason == "length":
        assert completion.completion_tokens == max_tokens
    else:
        assert completion.finish_reason == "stop"


def test_messages_go_through_the_chat_template(engine: MlxChatEngine) -> None:
    tokens = engine.prompt_tokens(MESSAGES)
    prompt = engine._tokenizer.decode(tokens)
    for message in MESSAGES:
        assert f"<|im_start|>{message['role']}\n{message['content']}<|im_end|>" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")  # an open assistant turn
    im_start = engine._tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert tokens.count(im_start) == len(MESSAGES) + 1  # markup is special tokens, not text

    completion = run(engine.complete(MESSAGES, max_tokens=4, seed=0, **SAMPLING))
    assert completion.prompt_tokens == len(tokens)  # what chat() feeds the model


def test_concurrent_chats_are_serialised_and_keep_their_seeds(engine: MlxChatEngine) -> None:
    alone = [run(engine.chat(MESSAGES, max_tokens=24, seed=s, **SAMPLING)) for s in (11, 12)]

    async def together() -> list[str]:
        return list(
            await asyncio.gather(
                *(engine.chat(MESSAGES, max_tokens=24, seed=s, **SAMPLING) for s in (11, 12))
            )
        )

    assert run(together()) == alone


def test_a_cancelled_chat_stops_generating(engine: MlxChatEngine) -> None:
    # Greedy decoding of the tiny model never reaches its end-of-turn token: a long job.
    async def scenario() -> tuple[float, float]:
        started = time.monotonic()
        full = await engine.complete(MESSAGES, max_tokens=LONG, seed=0, **GREEDY)
        full_s = time.monotonic() - started
        assert full.finish_reason == "length"

        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(
                engine.chat(MESSAGES, max_tokens=LONG, seed=0, **GREEDY), timeout=full_s / 20
            )
        await engine.chat(MESSAGES, max_tokens=1, seed=0, **GREEDY)  # queued behind it
        return full_s, time.monotonic() - started

    full_s, cancelled_s = run(scenario())
    assert cancelled_s < full_s / 2  # the abandoned job stopped instead of running to LONG


def test_invalid_max_tokens_is_refused(engine: MlxChatEngine) -> None:
    with pytest.raises(ValueError, match="max_tokens"):
        run(engine.chat(MESSAGES, max_tokens=0, seed=0, **SAMPLING))


def test_missing_model_dir_names_the_setting(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(ValueError, match=r"^lyrics\.model: ") as raised:
        MlxChatEngine(LyricsConfig(engine="mlx", model=str(missing)))
    assert str(missing) in str(raised.value)
    assert "make_tiny_qwen3.py" in str(raised.value)


def test_unloadable_model_dir_names_the_setting(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "qwen3"}')  # no weights, no tokenizer
    with pytest.raises(ValueError, match=r"^lyrics\.model: "):
        MlxChatEngine(LyricsConfig(engine="mlx", model=str(tmp_path)))


def test_closed_engine_raises_lyrics_engine_error(model_dir: Path) -> None:
    engine = MlxChatEngine(LyricsConfig(engine="mlx", model=str(model_dir)))

    async def scenario() -> None:
        await engine.close()
        await engine.close()  # idempotent
        with pytest.raises(LyricsEngineError, match=r"mlx engine, model .*closed"):
            await engine.chat(MESSAGES, max_tokens=4, seed=0, **SAMPLING)

    run(scenario())


def test_close_fails_queued_requests_with_lyrics_engine_error(model_dir: Path) -> None:
    engine = MlxChatEngine(LyricsConfig(engine="mlx", model=str(model_dir)))

    async def scenario() -> list[object]:
        chats = [
            asyncio.ensure_future(engine.chat(MESSAGES, max_tokens=4 * LONG, seed=0, **GREEDY))
            for _ in range(3)
        ]
        await asyncio.sleep(0.05)  # all submitted; the first is generating
        await engine.close()
        return list(await asyncio.gather(*chats, return_exceptions=True))

    outcomes = run(scenario())
    # The running one stopped, the queued ones never ran: all fail the same documented way.
    assert all(isinstance(outcome, LyricsEngineError) for outcome in outcomes), outcomes
    assert "closed" in str(outcomes[0])


@pytest.mark.parametrize(
    ("raw", "answer"),
    [
        ("[verse]\nla la", "[verse]\nla la"),
        ("<think>\nplan the song\n</think>\n\n[verse]\nla la", "[verse]\nla la"),
        ("<think>\n\n</think>\n\n[chorus]\noh", "[chorus]\noh"),
        ("plan begun in the prompt</think>\n[verse]\nla", "[verse]\nla"),
        ("<think>\nstill thinking when tokens ran out", ""),
    ],
)
def test_strip_thinking(raw: str, answer: str) -> None:
    assert strip_thinking(raw) == answer
