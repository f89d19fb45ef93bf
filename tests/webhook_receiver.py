"""A real webhook receiver for tests: an HTTP server on loopback, in a thread, that records each
delivery and answers as told (a status per attempt, or holding a delivery open)."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Delivery:
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def payload(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.body)
        return result


class Receiver:
    """`answer(delivery, earlier_deliveries_of_its_id) -> status` decides each answer."""

    def __init__(self, answer: Callable[[Delivery, int], int]) -> None:
        self.deliveries: list[Delivery] = []
        self._answer = answer
        self._lock = threading.Lock()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/songs"

    def handle(self, delivery: Delivery) -> int:
        with self._lock:
            seen = sum(
                d.headers.get("webhook-id") == delivery.headers.get("webhook-id")
                for d in self.deliveries
            )
            self.deliveries.append(delivery)
        return self._answer(delivery, seen)

    def by_id(self) -> dict[str, list[Delivery]]:
        with self._lock:
            grouped: dict[str, list[Delivery]] = {}
            for delivery in self.deliveries:
                grouped.setdefault(delivery.headers["webhook-id"], []).append(delivery)
            return grouped


@contextmanager
def running_receiver(
    answer: Callable[[Delivery, int], int] = lambda _d, _n: 204,
) -> Iterator[Receiver]:
    receiver = Receiver(answer)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            delivery = Delivery(
                path=self.path,
                headers={name.lower(): value for name, value in self.headers.items()},
                body=self.rfile.read(length),
            )
            status = receiver.handle(delivery)
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
