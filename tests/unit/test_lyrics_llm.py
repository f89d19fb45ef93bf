"""The lyrics writer (`LyricsLLM`) on a real OpenAI-protocol server with scripted answers: the
LLM's answer is used and repaired, an unusable one earns a stricter retry, then the template takes
over and says why; results are cached in the job store. No Ray."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from deployments.lyrics_llm import LyricsLLM, WrittenLyrics
from pipeline.lyrics_prompt import planned_structure
from serve.config import LyricsConfig, StorageConfig
from tests.chat_server import ScriptedChatServer, running_chat_server

GOOD = (
    "Here are your lyrics:\n"
    "**[Verse 1]**\n"
    "Salt on the rail and the harbour lights\n"
    "Gulls over water on summer nights\n"
    "Every wave is bringing me near\n"
    "Every mile is a song I hear\n"
    "[Chorus]\n"
    "Take me home, take me home\n"
    "Over the water, over the foam\n"
)
REFUSAL = "I'm sorry, I can't write that."

# Serve awaits LyricsLLM's async __del__ on shutdown; outside Serve, garbage collection calls it
# without awaiting (the tests close explicitly first).
pytestmark = pytest.mark.filterwarnings(
    "ignore:coroutine 'LyricsLLM.__del__' was never awaited:RuntimeWarning"
)


@pytest.fixture(scope="module")
def chat_server() -> Iterator[ScriptedChatServer]:
    with running_chat_server(GOOD) as server:
        yield server


def writer(server: ScriptedChatServer, tmp_path: Path, **overrides: object) -> LyricsLLM:
    config = LyricsConfig.model_validate(
        {
            "engine": "openai",
            "model": "tiny-lyricist",
            "base_url": server.base_url,
            "max_retries": 1,
            **overrides,
        }
    )
    return LyricsLLM(config, StorageConfig(data_dir=str(tmp_path)).resolved())


def write(llm: LyricsLLM, prompt: str = "sailing home", duration_s: float = 30, **kw: object):  # type: ignore[no-untyped-def]
    async def run() -> WrittenLyrics:
        try:
            return await llm.write(prompt, duration_s, **kw)  # type: ignore[arg-type]
        finally:
            await llm.close()

    return asyncio.run(run())


def test_the_llms_answer_is_used_repaired_and_attributed(
    chat_server: ScriptedChatServer, tmp_path: Path
) -> None:
    chat_server.script(GOOD)
    written = write(writer(chat_server, tmp_path), style="sunny indie pop", language="es", seed=7)
    assert (written.engine, written.model, written.fallback_reason) == (
        "openai",
        "tiny-lyricist",
        None,
    )
    assert [s.tag for s in written.sections] == ["verse", "chorus"]
    assert written.sections[1].lines == [
        "Take me home, take me home",
        "Over the water, over the foam",
    ]
    assert written.repairs  # the preamble and the markdown were removed
    (request,) = chat_server.requests
    assert request["seed"] == 7
    system, user = request["messages"][0]["content"], request["messages"][1]["content"]
    assert "Spanish" in system and "<idea>sailing home</idea>" in user
    assert "indie pop" in user


def test_an_unusable_answer_gets_one_stricter_retry(
    chat_server: ScriptedChatServer, tmp_path: Path
) -> None:
    chat_server.script(REFUSAL, GOOD)
    written = write(writer(chat_server, tmp_path))
    assert written.engine == "openai" and written.fallback_reason is None
    first, second = chat_server.requests
    assert "could not be used" not in first["messages"][0]["content"]
    assert "there was no [chorus] section" in second["messages"][0]["content"]
    assert second["seed"] == first["seed"] + 1


def test_two_unusable_answers_fall_back_to_the_template_and_say_why(
    chat_server: ScriptedChatServer, tmp_path: Path
) -> None:
    chat_server.script(REFUSAL, REFUSAL)
    written = write(writer(chat_server, tmp_path), duration_s=120)
    assert written.engine == "template"
    assert written.fallback_reason is not None
    assert written.fallback_reason.startswith("openai (tiny-lyricist): answer 2 of 2 unusable")
    tags = [s.tag for s in written.sections]
    assert "verse" in tags and "chorus" in tags
    assert len(chat_server.requests) == 2


def test_a_failing_server_falls_back_to_the_template(
    chat_server: ScriptedChatServer, tmp_path: Path
) -> None:
    chat_server.script(None, None)  # 503 twice: max_retries 1 is exhausted
    written = write(writer(chat_server, tmp_path))
    assert written.engine == "template"
    assert "503" in (written.fallback_reason or "")


def test_results_are_cached_by_prompt_duration_language_and_seed(
    chat_server: ScriptedChatServer, tmp_path: Path
) -> None:
    chat_server.script(GOOD)
    first = write(writer(chat_server, tmp_path), seed=1)
    again = write(writer(chat_server, tmp_path), seed=1)  # a new replica, the same store
    assert len(chat_server.requests) == 1
    assert again.cached and not first.cached
    assert again.text == first.text and again.engine == "openai"
    write(writer(chat_server, tmp_path), seed=2)
    write(writer(chat_server, tmp_path), seed=1, language="fr")
    write(writer(chat_server, tmp_path), seed=1, duration_s=60)
    assert len(chat_server.requests) == 4
    write(writer(chat_server, tmp_path, cache=False), seed=1)
    assert len(chat_server.requests) == 5


def test_fallbacks_are_not_cached(chat_server: ScriptedChatServer, tmp_path: Path) -> None:
    chat_server.script(None, None)
    assert write(writer(chat_server, tmp_path)).engine == "template"
    chat_server.script(GOOD)
    assert write(writer(chat_server, tmp_path)).engine == "openai"


@pytest.mark.parametrize("duration_s", [20, 60, 180, 300])
def test_every_engine_answer_has_verse_and_chorus_and_grows_with_duration(
    chat_server: ScriptedChatServer, tmp_path: Path, duration_s: float
) -> None:
    # A model that always writes the same short song: usable for short songs only; longer ones
    # fall back, so the answer still fits the duration.
    chat_server.script(GOOD, GOOD)
    written = write(writer(chat_server, tmp_path, cache=False), duration_s=duration_s)
    tags = [s.tag for s in written.sections]
    assert "verse" in tags and "chorus" in tags
    planned = sum(lines for _, lines in planned_structure(duration_s))
    assert sum(len(s.lines) for s in written.sections) >= planned / 2


def test_style_rewrite_asks_the_llm_and_caches(
    chat_server: ScriptedChatServer, tmp_path: Path
) -> None:
    async def rewrite(llm: LyricsLLM, style: str) -> str | None:
        try:
            return await llm.rewrite_style(style)
        finally:
            await llm.close()

    chat_server.script("**Tags:** synthwave, nostalgic, analog synth, 100 bpm")
    style = "music for a rainy night drive"
    assert asyncio.run(rewrite(writer(chat_server, tmp_path), style)) == (
        "synthwave, nostalgic, analog synth, 100 bpm"
    )
    (request,) = chat_server.requests
    assert f"<style>{style}</style>" in request["messages"][1]["content"]
    assert asyncio.run(rewrite(writer(chat_server, tmp_path), style)) == (
        "synthwave, nostalgic, analog synth, 100 bpm"
    )
    assert len(chat_server.requests) == 1  # the second came from the cache
    chat_server.script(None, None)
    assert asyncio.run(rewrite(writer(chat_server, tmp_path), "other words")) is None
    template = LyricsLLM(LyricsConfig(), None)
    assert asyncio.run(rewrite(template, style)) is None
