"""A small OpenAI-compatible chat server for tests that need an LLM to answer in a known way.

It speaks `/v1/chat/completions` (streaming SSE ending in `data: [DONE]`, or one JSON document),
records every request, and answers with the scripted texts in order (then the default text). An
answer of None is an HTTP 503 (the engine retries those). Served by uvicorn on loopback in a
background thread, so engines in this process and Ray workers on this machine can reach it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from tests.helpers import free_port


class ScriptedChatServer:
    def __init__(self, default_answer: str) -> None:
        self.default_answer = default_answer
        self.requests: list[dict[str, Any]] = []
        self.base_url = ""
        self._script: list[str | None] = []
        self._lock = threading.Lock()

    def script(self, *answers: str | None) -> None:
        with self._lock:
            self._script = list(answers)
            self.requests = []

    def _next(self, body: dict[str, Any]) -> str | None:
        with self._lock:
            self.requests.append(body)
            return self._script.pop(0) if self._script else self.default_answer

    def app(self) -> FastAPI:
        # Module-level imports: FastAPI resolves the string annotations against module globals.
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> Any:
            body = await request.json()
            answer = self._next(body)
            if answer is None:
                return JSONResponse({"error": {"message": "overloaded"}}, status_code=503)
            if not body.get("stream"):
                return JSONResponse(
                    {
                        "id": "chatcmpl-test",
                        "object": "chat.completion",
                        "model": body["model"],
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": answer},
                                "finish_reason": "stop",
                            }
                        ],
                    }
                )

            def events() -> Iterator[str]:
                for start in range(0, len(answer), 16):
                    chunk = {
                        "id": "chatcmpl-test",
                        "object": "chat.completion.chunk",
                        "model": body["model"],
                        "choices": [{"index": 0, "delta": {"content": answer[start : start + 16]}}],
                    }
                    yield f"data: {json.dumps(chunk)}\n\n"
                done = {
                    "id": "chatcmpl-test",
                    "object": "chat.completion.chunk",
                    "model": body["model"],
                    "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                }
                yield f"data: {json.dumps(done)}\n\ndata: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")

        return app


@contextmanager
def running_chat_server(default_answer: str) -> Iterator[ScriptedChatServer]:
    state = ScriptedChatServer(default_answer)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(state.app(), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the chat server did not start"
        time.sleep(0.02)
    state.base_url = f"http://127.0.0.1:{port}/v1"
    try:
        yield state
    finally:
        server.should_exit = True
        thread.join(timeout=10)
