"""Description mode through the whole graph with LLM lyrics engines: a one-line idea → lyrics from
the configured engine → tags → song, and the song record says which engine and model wrote them.

- `openai`: the LyricsLLM replica talks to an OpenAI-compatible server on loopback that answers
  with known lyrics, so the test can follow them from the server into the song.
- `mlx`: the real mlx-lm load and generate on a tiny random Qwen3 the test builds. Random weights
  write no usable lyrics, so the repair/retry/fallback path runs for real and the song says why.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.chat_server import ScriptedChatServer, running_chat_server
from tests.helpers import wait_for_song

from .conftest import Deployed

pytestmark = pytest.mark.integration

DeployFn = Callable[..., Deployed]
LYRICS = (
    "[verse]\n"
    "Lanterns on the water, we row into the night\n"
    "Every star a harbour, every wave a light\n"
    "[chorus]\n"
    "Row, row, bring me home\n"
    "Over the silver foam\n"
)


@pytest.fixture(scope="module")
def chat_server() -> Iterator[ScriptedChatServer]:
    with running_chat_server(LYRICS) as server:
        yield server


def test_an_idea_becomes_a_song_with_the_llms_lyrics(
    deploy: DeployFn, chat_server: ScriptedChatServer
) -> None:
    app = deploy(
        lyrics={"engine": "openai", "model": "lyricist-1", "base_url": chat_server.base_url}
    )
    chat_server.script()
    song_id = app.client.post(
        "/v1/songs",
        json={"prompt": "rowing home by lantern light", "duration_s": 20, "variations": 1},
    ).json()["id"]
    song = wait_for_song(app.client, song_id)
    assert song["status"] == "succeeded", song
    assert song["lyrics_source"]["engine"] == "openai"
    assert song["lyrics_source"]["model"] == "lyricist-1"
    assert song["lyrics_source"]["fallback_reason"] is None
    assert "Row, row, bring me home" in song["lyrics"]
    (request,) = chat_server.requests
    assert "<idea>rowing home by lantern light</idea>" in request["messages"][1]["content"]

    # POST /v1/lyrics goes through the same engine, and the cache answers the same idea again.
    body = {"prompt": "rowing home by lantern light", "duration_s": 20, "seed": 5}
    first = app.client.post("/v1/lyrics", json=body).json()
    again = app.client.post("/v1/lyrics", json=body).json()
    assert first["source"]["engine"] == "openai" and again["lyrics"] == first["lyrics"]
    assert len(chat_server.requests) == 2


@pytest.fixture(scope="module")
def tiny_qwen3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("mlx_lm")
    from pipeline.tiny.qwen3 import build_tiny_qwen3

    return build_tiny_qwen3(tmp_path_factory.mktemp("qwen3") / "tiny")


def test_random_mlx_lyrics_fall_back_and_the_song_says_why(
    deploy: DeployFn, tiny_qwen3: Path
) -> None:
    app = deploy(lyrics={"engine": "mlx", "model": str(tiny_qwen3), "max_tokens": 64})
    song_id = app.client.post(
        "/v1/songs",
        json={"prompt": "a lullaby for a sleepy fox", "duration_s": 30, "variations": 1, "seed": 1},
    ).json()["id"]
    song = wait_for_song(app.client, song_id)
    assert song["status"] == "succeeded", song
    source = song["lyrics_source"]
    assert source["engine"] == "template"
    assert source["fallback_reason"].startswith(f"mlx ({tiny_qwen3}): ")
    assert "[verse]" in song["lyrics"] and "[chorus]" in song["lyrics"]


def test_the_llm_rewrites_the_style_into_tags_when_asked(
    deploy: DeployFn, chat_server: ScriptedChatServer
) -> None:
    app = deploy(
        lyrics={"engine": "openai", "model": "lyricist-1", "base_url": chat_server.base_url},
        tags={"llm_rewrite": True},
    )
    chat_server.script("Tags: synthwave, nostalgic, analog synth, 100 bpm")
    text = {"text": "music for a rainy night drive"}
    tags = app.client.post("/v1/tags/normalize", json=text).json()
    assert (tags["genre"], tags["bpm"]) == ("synthwave", 100)
    assert "nostalgic" in tags["moods"]
    (request,) = chat_server.requests
    assert "<style>music for a rainy night drive</style>" in request["messages"][1]["content"]
    assert app.client.post("/v1/tags/normalize", json=text).json() == tags  # cached rewrite
    assert len(chat_server.requests) == 1
