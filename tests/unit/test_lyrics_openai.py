"""`OpenAIChatEngine` against a real OpenAI-compatible server on loopback.

No mocks of httpx: a small FastAPI app served by uvicorn in a background thread speaks the
`/v1/chat/completions` protocol (SSE chunks ending in `data: [DONE]`, or one JSON document),
records what it was sent, and answers each request with the next behaviour a test scripted.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from pipeline.engines.chat import ChatMessage, LyricsEngineError
from pipeline.engines.chat_openai import OpenAIChatEngine
from serve.config import LyricsConfig
from tests.helpers import free_port

MODEL = "tiny-lyricist"
API_KEY = "sk-test-0123456789"
MESSAGES: list[ChatMessage] = [
    {"role": "system", "content": "You write song lyrics."},
    {"role": "user", "content": "a song about sailing home"},
]
ANSWER_PARTS = ["[verse]\n", "Salt on the rail, ", "lights ", "of the harbour"]
ANSWER = "".join(ANSWER_PARTS)
RETRY_AFTER_S = 0.3
TIMEOUT_S = 0.25
SLOW_ANSWER_S = 1.0  # well past TIMEOUT_S, short enough not to hold the server's shutdown


@dataclass(frozen=True)
class RecordedRequest:
    path: str
    authorization: str | None
    body: dict[str, Any]


class ChatServer:
    """The OpenAI-compatible server's state: what it was sent and how it answers next.

    Behaviours, one per request in scripted order, then "answer" for every further request:
    "answer", "answer_with_reasoning", "answer_with_inline_thinking", "empty_after_reasoning",
    "json_despite_stream", "429", "500", "503", "400", "slow", "cut_stream",
    "stream_without_done".
    """

    def __init__(self) -> None:
        self.base_url = ""
        self.requests: list[RecordedRequest] = []
        self._script: list[str] = []
        self._lock = threading.Lock()

    def script(self, *behaviours: str) -> None:
        with self._lock:
            self._script = list(behaviours)

    def reset(self) -> None:
        with self._lock:
            self._script = []
            self.requests = []

    def take_behaviour(self, request: RecordedRequest) -> str:
        with self._lock:
            self.requests.append(request)
            return self._script.pop(0) if self._script else "answer"


def build_app(state: ChatServer) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        body = await request.json()
        behaviour = state.take_behaviour(
            RecordedRequest(request.url.path, request.headers.get("authorization"), body)
        )
        if behaviour in ("429", "500", "503", "400"):
            return error_response(int(behaviour), request)
        if behaviour == "slow":
            await asyncio.sleep(SLOW_ANSWER_S)
        reasoning = behaviour == "answer_with_reasoning"
        if behaviour == "empty_after_reasoning":
            parts, finish_reason = [], "length"
        elif behaviour == "answer_with_inline_thinking":
            parts, finish_reason = ["<think>\nRhymes: ", "home, foam.\n</think>\n\n"], "stop"
            parts += ANSWER_PARTS
        else:
            parts, finish_reason = ANSWER_PARTS, "stop"
        if not body.get("stream") or behaviour == "json_despite_stream":
            text = "".join(parts) if parts else None
            return JSONResponse(completion(body["model"], text, finish_reason, reasoning))
        if behaviour == "cut_stream":
            return StreamingResponse(cut_stream(body["model"]), media_type="text/event-stream")
        if behaviour == "stream_without_done":
            events = sse_events(body["model"], ANSWER_PARTS[:2], None, reasoning)[:3]
            return StreamingResponse(iter(events), media_type="text/event-stream")
        events = sse_events(body["model"], parts, finish_reason, reasoning or not parts)
        return StreamingResponse(iter(events), media_type="text/event-stream")

    def error_response(status: int, request: Request) -> JSONResponse:
        headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 429 else None
        message = {
            429: "Rate limit reached, slow down",
            500: "Internal error in the scheduler",
            503: "The engine is overloaded",
            # Echoing the request back is what careless servers do; the key must not leak.
            400: f"Unknown field in request sent with {request.headers.get('authorization')}",
        }[status]
        return JSONResponse(
            {"error": {"message": message, "type": "server_error", "code": status}},
            status_code=status,
            headers=headers,
        )

    async def cut_stream(model: str) -> AsyncIterator[str]:
        for event in sse_events(model, ANSWER_PARTS, "stop", False)[:3]:
            yield event
        await asyncio.sleep(0.05)
        # Raising after the response started makes uvicorn drop the connection without the
        # final chunk: the client sees the stream break midway, as when a server dies.
        raise ConnectionAbortedError("the test server cuts this stream")

    return app


def completion(model: str, text: str | None, finish_reason: str, reasoning: bool) -> dict:
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if reasoning or text is None:
        message["reasoning_content"] = "Let me think about rhymes first."
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21},
    }


def sse_events(
    model: str, parts: list[str], finish_reason: str | None, reasoning: bool
) -> list[str]:
    """OpenAI's streaming shape: a role chunk with null content, (reasoning chunks), content
    chunks, a finish chunk, a usage chunk without choices, then `[DONE]`."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        payload = {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return f"data: {json.dumps(payload)}\n\n"

    events = [chunk({"role": "assistant", "content": None})]
    if reasoning:
        events += [
            chunk({"reasoning_content": "Rhymes: ", "content": None}),
            chunk({"reasoning_content": "home, foam."}),
        ]
    events += [chunk({"content": part}) for part in parts]
    events.append(chunk({}, finish_reason))
    usage = {"id": "chatcmpl-1", "choices": [], "usage": {"total_tokens": 21}}
    events += [": keep-alive\n\n", f"data: {json.dumps(usage)}\n\n", "data: [DONE]\n\n"]
    return events


@pytest.fixture(scope="module")
def running_server() -> Iterator[ChatServer]:
    state = ChatServer()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    state.base_url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    config = uvicorn.Config(
        build_app(state),
        log_config=None,
        log_level="critical",  # the cut stream's deliberate exception is not news
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test chat server did not start")
        time.sleep(0.01)
    yield state
    server.should_exit = True
    thread.join(timeout=5)
    listener.close()


@pytest.fixture
def server(running_server: ChatServer) -> ChatServer:
    running_server.reset()
    return running_server


def make_engine(base_url: str, **settings: Any) -> OpenAIChatEngine:
    config = LyricsConfig(
        **{
            "engine": "openai",
            "model": MODEL,
            "base_url": base_url,
            "api_key": API_KEY,
            "max_retries": 2,
            "timeout_s": 5.0,
            **settings,
        }
    )
    # Millisecond backoff keeps the retry tests fast; Retry-After still applies in full.
    return OpenAIChatEngine(config, retry_base_delay_s=0.01, retry_max_delay_s=0.05)


async def ask(engine: OpenAIChatEngine, seed: int = 7) -> str:
    return await engine.chat(MESSAGES, max_tokens=256, temperature=0.7, top_p=0.9, seed=seed)


def chat_once(base_url: str, **settings: Any) -> str:
    async def scenario() -> str:
        engine = make_engine(base_url, **settings)
        try:
            return await ask(engine)
        finally:
            await engine.close()

    return asyncio.run(scenario())


def chat_error(base_url: str, **settings: Any) -> str:
    with pytest.raises(LyricsEngineError) as raised:
        chat_once(base_url, **settings)
    return str(raised.value)


# --- the protocol ---------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [True, False])
def test_answer_and_request_follow_the_protocol(server: ChatServer, stream: bool) -> None:
    # A trailing slash on base_url must not double the path's slash.
    assert chat_once(server.base_url + "/", stream=stream) == ANSWER

    [request] = server.requests
    assert request.path == "/v1/chat/completions"
    assert request.authorization == f"Bearer {API_KEY}"
    assert request.body == {
        "model": MODEL,
        "messages": MESSAGES,
        "max_tokens": 256,
        "temperature": 0.7,
        "top_p": 0.9,
        "seed": 7,
        "stream": stream,
    }


@pytest.mark.parametrize("stream", [True, False])
def test_reasoning_content_and_null_content_are_skipped(server: ChatServer, stream: bool) -> None:
    server.script("answer_with_reasoning")
    assert chat_once(server.base_url, stream=stream) == ANSWER


@pytest.mark.parametrize("stream", [True, False])
def test_inline_thinking_is_removed_from_the_answer(server: ChatServer, stream: bool) -> None:
    server.script("answer_with_inline_thinking")
    assert chat_once(server.base_url, stream=stream) == ANSWER


def test_a_json_answer_to_a_streaming_request_is_read_whole(server: ChatServer) -> None:
    server.script("json_despite_stream")
    assert chat_once(server.base_url, stream=True) == ANSWER


@pytest.mark.parametrize("stream", [True, False])
def test_an_empty_answer_fails_at_once_naming_the_reasoning(
    server: ChatServer, stream: bool
) -> None:
    server.script("empty_after_reasoning")
    message = chat_error(server.base_url, stream=stream)
    assert "empty answer" in message and "finish_reason=length" in message
    assert "lyrics.max_tokens" in message
    assert len(server.requests) == 1


def test_the_key_comes_from_the_named_environment_variable(
    server: ChatServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SONGSERVE_TEST_LLM_KEY", "sk-from-env")
    chat_once(server.base_url, api_key=None, api_key_env="SONGSERVE_TEST_LLM_KEY")
    assert server.requests[0].authorization == "Bearer sk-from-env"


def test_no_key_sends_no_authorization_header(
    server: ChatServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SONGSERVE_TEST_LLM_KEY", raising=False)
    chat_once(server.base_url, api_key=None, api_key_env="SONGSERVE_TEST_LLM_KEY")
    assert server.requests[0].authorization is None


def test_concurrent_chats_share_one_engine(server: ChatServer) -> None:
    async def scenario() -> list[str]:
        engine = make_engine(server.base_url)
        try:
            return await asyncio.gather(*(ask(engine, seed) for seed in range(4)))
        finally:
            await engine.close()

    assert asyncio.run(scenario()) == [ANSWER] * 4
    assert sorted(request.body["seed"] for request in server.requests) == [0, 1, 2, 3]


# --- retries --------------------------------------------------------------------------------------


def test_429_waits_for_retry_after_then_succeeds(server: ChatServer) -> None:
    server.script("429")
    started = time.monotonic()
    assert chat_once(server.base_url) == ANSWER
    # The backoff alone would be milliseconds: the wait is the server's Retry-After.
    assert time.monotonic() - started >= RETRY_AFTER_S * 0.9
    assert len(server.requests) == 2


def test_500_is_retried(server: ChatServer) -> None:
    server.script("500")
    assert chat_once(server.base_url, stream=False) == ANSWER
    assert len(server.requests) == 2


def test_always_503_gives_up_after_max_retries_plus_one_attempts(server: ChatServer) -> None:
    server.script(*["503"] * 10)
    message = chat_error(server.base_url, max_retries=3)
    assert len(server.requests) == 4
    assert "openai engine" in message and MODEL in message
    assert f"{server.base_url}/chat/completions" in message
    assert "4 attempts" in message
    assert "HTTP 503" in message and "The engine is overloaded" in message


def test_400_fails_at_once_without_leaking_the_key(server: ChatServer) -> None:
    server.script("400")
    message = chat_error(server.base_url, max_retries=3)
    assert len(server.requests) == 1
    assert "HTTP 400" in message and "Unknown field in request" in message
    assert API_KEY not in message


def test_a_slow_answer_times_out_and_is_retried(server: ChatServer) -> None:
    server.script("slow", "slow")
    started = time.monotonic()
    message = chat_error(server.base_url, timeout_s=TIMEOUT_S, max_retries=1)
    assert len(server.requests) == 2
    assert "timed out" in message and f"timeout_s={TIMEOUT_S:g}" in message
    assert time.monotonic() - started < SLOW_ANSWER_S * 2


def test_a_slow_answer_then_a_fast_one_succeeds(server: ChatServer) -> None:
    server.script("slow")
    assert chat_once(server.base_url, timeout_s=TIMEOUT_S, max_retries=1) == ANSWER


def test_a_stream_cut_midway_is_retried_from_scratch(server: ChatServer) -> None:
    server.script("cut_stream")
    # The retry's answer alone: nothing of the broken first stream is kept.
    assert chat_once(server.base_url) == ANSWER
    assert len(server.requests) == 2


def test_a_stream_ending_before_done_is_retried(server: ChatServer) -> None:
    server.script("stream_without_done", "stream_without_done")
    message = chat_error(server.base_url, max_retries=1)
    assert len(server.requests) == 2
    assert "before `data: [DONE]`" in message


def test_a_refused_connection_is_retried_then_named() -> None:
    closed_port_url = f"http://127.0.0.1:{free_port()}/v1"
    message = chat_error(closed_port_url, max_retries=1)
    assert "2 attempts" in message and "ConnectError" in message
    assert closed_port_url in message


def test_a_closed_engine_refuses_to_chat(server: ChatServer) -> None:
    async def scenario() -> None:
        engine = make_engine(server.base_url)
        await engine.close()
        with pytest.raises(LyricsEngineError, match="closed"):
            await ask(engine)

    asyncio.run(scenario())
    assert server.requests == []


def test_the_engine_needs_a_model_and_a_base_url() -> None:
    config = LyricsConfig(engine="template", model=None, base_url=None)
    with pytest.raises(ValueError, match=r"lyrics\.base_url"):
        OpenAIChatEngine(config)


def test_the_key_is_not_read_from_the_environment_when_set_in_config(
    server: ChatServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SONGSERVE_TEST_LLM_KEY", "sk-from-env")
    chat_once(server.base_url, api_key_env="SONGSERVE_TEST_LLM_KEY")
    assert server.requests[0].authorization == f"Bearer {API_KEY}"
