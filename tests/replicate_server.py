"""A local stand-in for api.replicate.com, for tests: Replicate cannot be reached from here (no
network, and real predictions cost money and minutes), so songserve's Replicate engine is tested
against this server, driven by the real `replicate` client pointed at it with
`replicate.Client(api_token=server.token, base_url=server.base_url)`.

It speaks the parts of Replicate's HTTP API a prediction's life uses, with the real shapes:

- auth: `Authorization: Bearer <token>` (or the older `Token <token>`); a missing or wrong token is
  a 401 problem document (`{"title", "detail", "status"}`, `application/problem+json`);
- `POST /v1/predictions` with `version` as a 64-hex version id, `owner/name:version` or an official
  model's `owner/name`, and `POST /v1/models/{owner}/{name}/predictions` (the model's latest
  version); an unknown version is a 422 and an unknown model a 404, as Replicate answers. The
  answer is a 201 with the prediction object (`id`, `model`, `version`, `input`, `status`,
  `output`, `error`, `logs`, `metrics`, `created_at`/`started_at`/`completed_at` in ISO 8601 with
  `Z`, `urls` {get, cancel, web}, `data_removed`) and a `Location` header;
- `Prefer: wait` / `Prefer: wait=N` (N from 1 to 60, the API's documented pattern; a malformed
  wait preference is a 422 here, a status assumed, not seen from Replicate) holds the create
  response up to N seconds (default 60) for the prediction to finish. A hold that runs out answers
  with status "starting", as Replicate does ("even if it is actually processing", replicate/run.py
  says, and its `run()` relies on it: it takes any other status after a wait as finished);
- `GET /v1/predictions` (one page, newest first), `GET /v1/predictions/{id}`,
  `POST /v1/predictions/{id}/cancel` (a starting or processing prediction becomes "canceled" at
  once, output null; a finished one is returned as it is); an unknown id is a 404;
- `GET /v1/models/{owner}/{name}`, `.../versions` and `.../versions/{id}` (the client's `run()`
  fetches the version to read its output schema);
- webhooks: `webhook` + `webhook_events_filter` (start, output, logs, completed; all four when left
  out; unknown events are a 422) and the older `webhook_completed`, delivered as POSTs of the
  prediction JSON signed the Standard Webhooks way, as Replicate signs them (`webhook-id`,
  `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">` keyed
  with the base64-decoded secret after `whsec_`); `GET /v1/webhooks/default/secret` gives the key;
- output files: `ctx.file(...)` stores bytes served (without auth, like replicate.delivery) at
  `{base_url}/files/{prediction_id}/{name}`.

Where it simplifies:

- a model is a Python callable run on a thread of this process (no Cog container, no cold boot,
  no hardware, no queueing unless `start_delay` is set); input is not checked against a schema;
  a cancel finishes the prediction at once, and a run that ignores `ctx.canceled` runs on
  unseen (its result is dropped);
- output is set once, when the run returns (no incremental `output` events, no streaming: `urls`
  has no `stream` entry and there is no SSE endpoint); a failed run's traceback is not logged;
- `output` and `logs` webhooks are sent on every change, not throttled to one per 500 ms; only
  `completed` is retried on a non-2xx answer, a few times with short back-offs (Replicate retries
  for about a minute); deliveries go out in order from one thread;
- outputs are served by this host over plain HTTP unless `tls=True`. The client wraps only
  `https:`/`data:` URLs in `FileOutput`, so with plain HTTP `client.run()` returns file outputs as
  URL strings; `tls=True` serves HTTPS with a certificate from a throwaway CA (`server.ca_file`),
  which gives `FileOutput`s as from replicate.delivery. The client builds its own httpx
  transports, so `verify=` on `replicate.Client` is ignored: trust the CA with
  `SSL_CERT_FILE=server.ca_file` in the environment before the client's first request (httpx
  reads it when the transport is built), or pass `transport=httpx.HTTPTransport(verify=...)` to
  a client used only synchronously;
- not modeled: the files API (`/v1/files`: pass inputs as data: URLs), deployments, trainings,
  collections, hardware, accounts, rate limits (inject them with `fail_next`), pagination
  cursors, `data_removed` expiry, per-field input validation errors.

Failures are injected per server: `fail_next(n, status, path_prefix=..., retry_after=...)`.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import hmac
import ipaddress
import json
import os
import queue
import re
import secrets
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

TERMINAL = frozenset({"succeeded", "failed", "canceled"})
WEBHOOK_EVENTS = ("start", "output", "logs", "completed")
_VERSION_ID = re.compile(r"^[0-9a-f]{64}$")
_PREFER_WAIT = re.compile(r"^\s*wait(?:\s*=\s*(\d+))?\s*$")
_CANCEL_PATH = re.compile(r"^/v1/predictions/[^/]+/cancel$")


class ModelError(Exception):
    """Raised by a model's run: the prediction ends "failed" with this message as its error."""


class RunContext:
    """What a model's run gets besides its input: logs, output files, and cancellation."""

    def __init__(self, server: ReplicateServer, prediction_id: str) -> None:
        self._server = server
        self.prediction_id = prediction_id
        self.cancel_event = threading.Event()

    @property
    def canceled(self) -> bool:
        return self.cancel_event.is_set()

    def sleep(self, seconds: float) -> bool:
        """Sleep, returning early when the prediction is canceled; returns `self.canceled`."""
        return self.cancel_event.wait(seconds)

    def log(self, line: str) -> None:
        """Append a line to the prediction's `logs` (a `logs` webhook event)."""
        self._server._append_log(self.prediction_id, line)

    def file(self, name: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        """Serve `data` as an output file; returns its URL, to put in the output."""
        return self._server._store_file(self.prediction_id, name, data, content_type)


@dataclass
class _Version:
    owner_name: str
    id: str
    run: Callable[[dict[str, Any], RunContext], Any]
    created_at: str
    output_schema: dict[str, Any]

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created_at": self.created_at,
            "cog_version": "0.13.6",
            "openapi_schema": {
                "openapi": "3.0.2",
                "info": {"title": "Cog", "version": "0.1.0"},
                "paths": {},
                "components": {
                    "schemas": {
                        "Input": {"type": "object", "title": "Input", "properties": {}},
                        "Output": {"title": "Output", **self.output_schema},
                    }
                },
            },
        }


@dataclass
class _Model:
    versions: dict[str, _Version] = field(default_factory=dict)
    latest: str | None = None


@dataclass
class _Failure:
    remaining: int
    status: int
    path_prefix: str
    retry_after: float | None
    method: str | None


@dataclass
class _Running:
    version: _Version
    ctx: RunContext
    webhook: str | None
    events: frozenset[str]
    webhook_completed: str | None
    started: float | None = None


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _problem(status: int, title: str, detail: str, headers: dict[str, str] | None = None) -> Any:
    return JSONResponse(
        {"title": title, "detail": detail, "status": status},
        status_code=status,
        headers=headers,
        media_type="application/problem+json",
    )


def _not_found(detail: str = "Not found.") -> Any:
    return _problem(404, "Not found", detail)


class ReplicateServer:
    """Replicate's predictions API on 127.0.0.1 (a free port), served by uvicorn in a thread.

    Use as a context manager. State is read with `predictions` / `prediction(id)`, `requests`,
    `cancel_count()` and `webhook_attempts`; all are thread-safe snapshots.
    """

    def __init__(
        self,
        *,
        token: str = "r8_test",
        webhook_secret: str | None = None,
        tls: bool = False,
        start_delay: float = 0.0,
        webhook_retry_delays: tuple[float, ...] = (0.05, 0.1, 0.2),
    ) -> None:
        self.token = token
        if webhook_secret is None:
            webhook_secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        if not webhook_secret.startswith("whsec_"):
            raise ValueError("a webhook secret looks like whsec_<base64>")
        self._webhook_key = base64.b64decode(webhook_secret.removeprefix("whsec_"))
        self.webhook_secret = webhook_secret
        self.tls = tls
        self.start_delay = start_delay
        self.webhook_retry_delays = webhook_retry_delays
        self.base_url = ""
        self.port = 0
        self.ca_file: str | None = None  # with tls: the CA that signed the server's certificate

        self._lock = threading.Lock()
        self._models: dict[str, _Model] = {}
        self._predictions: dict[str, dict[str, Any]] = {}
        self._running: dict[str, _Running] = {}
        self._files: dict[str, tuple[bytes, str]] = {}
        self._requests: list[tuple[str, str, dict[str, str]]] = []
        self._failures: list[_Failure] = []
        self._webhook_attempts: list[tuple[str, str, str, int | str]] = []
        self._webhooks: queue.Queue[tuple[str, str, str, str, bool] | None] = queue.Queue()
        self._closing = threading.Event()
        self._server: uvicorn.Server | None = None
        self._threads: list[threading.Thread] = []
        self._tmp: Path | None = None

    # -- the test's interface ----------------------------------------------------------------

    def add_model(
        self,
        owner_name: str,
        version: str,
        run: Callable[[dict[str, Any], RunContext], Any],
        *,
        latest: bool = True,
        output_schema: dict[str, Any] | None = None,
    ) -> None:
        """Register a model version. `run(input, ctx)` is called on a thread of its own when the
        prediction starts: it returns the output (any JSON value; `ctx.file(...)` gives URLs to
        put in it) or raises (ModelError or any exception: "failed" with `str(exc)` as error).
        `output_schema` is the version's OpenAPI `Output` schema (`client.run` treats
        `{"type": "array", "x-cog-array-type": "iterator"}` as a streamed list)."""
        if not re.fullmatch(r"[^/\s:]+/[^/\s:]+", owner_name):
            raise ValueError(f"a model is named owner/name, not {owner_name!r}")
        if not _VERSION_ID.match(version):
            raise ValueError(f"a version id is 64 lower-case hex digits, not {version!r}")
        with self._lock:
            model = self._models.setdefault(owner_name, _Model())
            model.versions[version] = _Version(
                owner_name, version, run, _now(), dict(output_schema or {})
            )
            if latest:
                model.latest = version

    def fail_next(
        self,
        n: int,
        status: int = 503,
        *,
        path_prefix: str = "/v1/",
        retry_after: float | None = None,
        method: str | None = None,
    ) -> None:
        """The next `n` requests whose path starts with `path_prefix` (and, when given, whose
        method is `method`) get `status` with a problem+json body, and a `Retry-After` header
        when `retry_after` is given, instead of being served. Checked before auth. (The client's
        RetryTransport honours only a whole number of seconds in Retry-After.)"""
        with self._lock:
            self._failures.append(
                _Failure(n, status, path_prefix, retry_after, method.upper() if method else None)
            )

    @property
    def predictions(self) -> dict[str, dict[str, Any]]:
        """A snapshot: prediction id → its current JSON."""
        with self._lock:
            return copy.deepcopy(self._predictions)

    def prediction(self, prediction_id: str) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self._predictions[prediction_id])

    @property
    def requests(self) -> list[tuple[str, str, dict[str, str]]]:
        """(method, path, lower-case headers) of every request received, in order."""
        with self._lock:
            return [(m, p, dict(h)) for m, p, h in self._requests]

    def cancel_count(self) -> int:
        """How many `POST /v1/predictions/{id}/cancel` requests were received."""
        with self._lock:
            return sum(m == "POST" and bool(_CANCEL_PATH.match(p)) for m, p, _ in self._requests)

    @property
    def webhook_attempts(self) -> list[tuple[str, str, str, int | str]]:
        """(prediction id, event, url, HTTP status or error text) of every delivery attempt."""
        with self._lock:
            return list(self._webhook_attempts)

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Block until every prediction is finished and every webhook delivery has been tried."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                busy = any(p["status"] not in TERMINAL for p in self._predictions.values())
            if not busy and self._webhooks.unfinished_tasks == 0:
                return
            time.sleep(0.01)
        raise TimeoutError("the Replicate stand-in did not go idle")

    # -- lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> ReplicateServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        ssl_files: dict[str, Any] = {}
        if self.tls:
            self._tmp = Path(tempfile.mkdtemp(prefix="replicate-server-"))
            ca, cert, key = _throwaway_tls(self._tmp)
            ssl_files = {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
            self.ca_file = str(ca)
        self.base_url = f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            self._app(),
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
            **ssl_files,
        )
        self._server = uvicorn.Server(config)
        serve = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True, name="replicate"
        )
        sender = threading.Thread(target=self._send_webhooks, daemon=True, name="replicate-hooks")
        self._threads = [serve, sender]
        serve.start()
        sender.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not serve.is_alive():
                raise RuntimeError("the Replicate stand-in did not start")
            time.sleep(0.01)

    def close(self) -> None:
        self._closing.set()
        with self._lock:
            for running in self._running.values():
                running.ctx.cancel_event.set()
        self._webhooks.put(None)
        if self._server is not None and self._threads:
            serve = self._threads[0]
            self._server.should_exit = True
            serve.join(timeout=0.5)
            # A kept-alive TLS connection waits for its client's close_notify, which an idle
            # pooled client never sends: stop waiting for connections to close.
            self._server.force_exit = True
        for thread in self._threads:
            thread.join(timeout=10)
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)

    # -- HTTP -------------------------------------------------------------------------------

    def _app(self) -> Starlette:
        methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "QUERY"]
        g = self._guarded
        return Starlette(
            routes=[
                Route("/v1/predictions", g(self._create), methods=["POST"]),
                Route("/v1/predictions", g(self._list), methods=["GET"]),
                Route("/v1/predictions/{id}", g(self._get), methods=["GET"]),
                Route("/v1/predictions/{id}/cancel", g(self._cancel), methods=["POST"]),
                Route(
                    "/v1/models/{owner}/{name}/predictions",
                    g(self._create_for_model),
                    methods=["POST"],
                ),
                Route("/v1/models/{owner}/{name}", g(self._get_model), methods=["GET"]),
                Route("/v1/models/{owner}/{name}/versions", g(self._versions), methods=["GET"]),
                Route(
                    "/v1/models/{owner}/{name}/versions/{version}",
                    g(self._get_version),
                    methods=["GET"],
                ),
                Route("/v1/webhooks/default/secret", g(self._secret), methods=["GET"]),
                Route("/files/{id}/{name}", g(self._file, auth=False), methods=["GET"]),
                Route("/{path:path}", g(self._unknown, auth=False), methods=methods),
            ]
        )

    def _guarded(self, handler: Callable[[Request], Any], *, auth: bool = True) -> Any:
        async def endpoint(request: Request) -> Any:
            method, path = request.method, request.url.path
            with self._lock:
                self._requests.append((method, path, dict(request.headers)))
                failure = next(
                    (
                        f
                        for f in self._failures
                        if f.remaining > 0
                        and path.startswith(f.path_prefix)
                        and f.method in (None, method)
                    ),
                    None,
                )
                if failure is not None:
                    failure.remaining -= 1
            if failure is not None:
                return _injected(failure)
            if auth:
                scheme, _, given = request.headers.get("authorization", "").partition(" ")
                if not given.strip():
                    return _problem(
                        401, "Unauthenticated", "You did not pass an authentication token"
                    )
                if scheme.lower() not in ("bearer", "token") or not hmac.compare_digest(
                    given.strip().encode(), self.token.encode()
                ):
                    return _problem(
                        401, "Unauthenticated", "You did not pass a valid authentication token"
                    )
            return await handler(request)

        return endpoint

    async def _create(self, request: Request) -> Any:
        body = await _json_body(request)
        if not isinstance(body, dict):
            return body
        ref = body.get("version")
        if not isinstance(ref, str) or not ref:
            return _problem(422, "Input validation failed", "- version: version is required")
        with self._lock:
            version = self._resolve(ref)
        if version is None:
            return _problem(
                422,
                "Invalid version or not permitted",
                "The specified version does not exist (or perhaps you don't have permission "
                "to use it?)",
            )
        return await self._start(request, version, body)

    async def _create_for_model(self, request: Request) -> Any:
        body = await _json_body(request)
        if not isinstance(body, dict):
            return body
        owner_name = f"{request.path_params['owner']}/{request.path_params['name']}"
        with self._lock:
            version = self._resolve(owner_name)
        if version is None:
            return _not_found(f"Model {owner_name} not found (or it has no latest version).")
        return await self._start(request, version, body)

    def _resolve(self, ref: str) -> _Version | None:
        """A version for `{id}`, `owner/name:{id}` or `owner/name` (the latest); lock held."""
        if "/" in ref:
            owner_name, _, version_id = ref.partition(":")
            model = self._models.get(owner_name)
            if model is None:
                return None
            version_id = version_id or (model.latest or "")
            return model.versions.get(version_id)
        for model in self._models.values():
            if ref in model.versions:
                return model.versions[ref]
        return None

    async def _start(self, request: Request, version: _Version, body: dict[str, Any]) -> Any:
        # RFC 7240: other preferences are ignored; a `wait` one must be well formed.
        prefer = [
            p for p in request.headers.get("prefer", "").split(",") if p.strip().startswith("wait")
        ]
        wait_s: float | None = None
        if prefer:
            match = _PREFER_WAIT.match(prefer[0])
            if match is None or not 1 <= int(match.group(1) or 60) <= 60:
                return _problem(
                    422,
                    "Invalid Prefer header",
                    "Prefer must be 'wait' or 'wait=n' with n between 1 and 60",
                )
            wait_s = float(match.group(1) or 60)
        payload = body.get("input")
        if not isinstance(payload, dict):
            return _problem(422, "Input validation failed", "- input: input is required")
        webhook = body.get("webhook")
        webhook_completed = body.get("webhook_completed")
        for url in (webhook, webhook_completed):
            if url is not None and (
                not isinstance(url, str) or not url.startswith(("http://", "https://"))
            ):
                return _problem(422, "Input validation failed", "- webhook: must be a URL")
        events = body.get("webhook_events_filter")
        if events is None:
            events = list(WEBHOOK_EVENTS)
        if not isinstance(events, list) or any(e not in WEBHOOK_EVENTS for e in events):
            return _problem(
                422,
                "Input validation failed",
                "- webhook_events_filter: items must be one of start, output, logs, completed",
            )

        prediction_id = base64.b32encode(secrets.token_bytes(16)).decode().lower()[:26]
        api = f"{self.base_url}/v1/predictions/{prediction_id}"
        prediction: dict[str, Any] = {
            "id": prediction_id,
            "model": version.owner_name,
            "version": version.id,
            "input": payload,
            "logs": None,
            "output": None,
            "data_removed": False,
            "error": None,
            "source": "api",
            "status": "starting",
            "created_at": _now(),
            "started_at": None,
            "completed_at": None,
            "urls": {
                "cancel": f"{api}/cancel",
                "get": api,
                "web": f"https://replicate.com/p/{prediction_id}",
            },
            "metrics": {},
        }
        running = _Running(
            version,
            RunContext(self, prediction_id),
            webhook,
            frozenset(events),
            webhook_completed,
        )
        with self._lock:
            self._predictions[prediction_id] = prediction
            self._running[prediction_id] = running
            self._emit(prediction_id, "start")
            snapshot = copy.deepcopy(prediction)
        threading.Thread(
            target=self._execute,
            args=(prediction_id, running),
            daemon=True,
            name=f"run-{prediction_id}",
        ).start()

        if wait_s is not None:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + wait_s
            while not self._closing.is_set():
                with self._lock:
                    snapshot = copy.deepcopy(self._predictions[prediction_id])
                if snapshot["status"] in TERMINAL or loop.time() >= deadline:
                    break
                await asyncio.sleep(0.01)
            if snapshot["status"] not in TERMINAL:
                snapshot["status"] = "starting"  # what Replicate answers when a hold runs out
        return JSONResponse(snapshot, status_code=201, headers={"Location": api})

    async def _list(self, request: Request) -> Any:
        with self._lock:
            results = [copy.deepcopy(p) for p in reversed(self._predictions.values())]
        return JSONResponse({"previous": None, "next": None, "results": results})

    async def _get(self, request: Request) -> Any:
        with self._lock:
            prediction = self._predictions.get(request.path_params["id"])
            snapshot = copy.deepcopy(prediction)
        if snapshot is None:
            return _not_found()
        return JSONResponse(snapshot)

    async def _cancel(self, request: Request) -> Any:
        prediction_id = request.path_params["id"]
        with self._lock:
            prediction = self._predictions.get(prediction_id)
            if prediction is None:
                return _not_found()
            running = self._running.get(prediction_id)
            if prediction["status"] not in TERMINAL and running is not None:
                running.ctx.cancel_event.set()
                self._finish(prediction_id, "canceled", None, None)
            snapshot = copy.deepcopy(prediction)
        return JSONResponse(snapshot)

    async def _get_model(self, request: Request) -> Any:
        owner, name = request.path_params["owner"], request.path_params["name"]
        with self._lock:
            model = self._models.get(f"{owner}/{name}")
            if model is None:
                return _not_found()
            latest = model.versions[model.latest].json() if model.latest else None
        return JSONResponse(
            {
                "url": f"https://replicate.com/{owner}/{name}",
                "owner": owner,
                "name": name,
                "description": None,
                "visibility": "public",
                "github_url": None,
                "paper_url": None,
                "license_url": None,
                "run_count": 0,
                "cover_image_url": None,
                "default_example": None,
                "latest_version": latest,
            }
        )

    async def _versions(self, request: Request) -> Any:
        owner, name = request.path_params["owner"], request.path_params["name"]
        with self._lock:
            model = self._models.get(f"{owner}/{name}")
            if model is None:
                return _not_found()
            results = [v.json() for v in reversed(model.versions.values())]
        return JSONResponse({"previous": None, "next": None, "results": results})

    async def _get_version(self, request: Request) -> Any:
        params = request.path_params
        with self._lock:
            model = self._models.get(f"{params['owner']}/{params['name']}")
            version = model.versions.get(params["version"]) if model else None
            found = version.json() if version else None
        if found is None:
            return _not_found()
        return JSONResponse(found)

    async def _secret(self, request: Request) -> Any:
        return JSONResponse({"key": self.webhook_secret})

    async def _file(self, request: Request) -> Any:
        key = f"{request.path_params['id']}/{request.path_params['name']}"
        with self._lock:
            stored = self._files.get(key)
        if stored is None:
            return _not_found()
        data, content_type = stored
        return Response(data, media_type=content_type)

    async def _unknown(self, request: Request) -> Any:
        return _not_found()

    # -- predictions ------------------------------------------------------------------------

    def _execute(self, prediction_id: str, running: _Running) -> None:
        ctx = running.ctx
        if self.start_delay and ctx.cancel_event.wait(self.start_delay):
            return  # canceled while starting: the cancel finished it
        with self._lock:
            prediction = self._predictions[prediction_id]
            if prediction["status"] in TERMINAL:
                return
            prediction.update(status="processing", started_at=_now(), logs="")
            running.started = time.monotonic()
        output: Any = None
        error: str | None = None
        try:
            output = running.version.run(copy.deepcopy(prediction["input"]), ctx)
            json.dumps(output)
        except Exception as exc:  # noqa: BLE001 - the model's failure, whatever it raised
            output, error = None, str(exc)
        with self._lock:
            if self._predictions[prediction_id]["status"] in TERMINAL:
                return  # canceled while running: the cancel finished it
            if ctx.canceled:
                self._finish(prediction_id, "canceled", None, None)
            elif error is not None:
                self._finish(prediction_id, "failed", None, error)
            else:
                if output is not None:
                    self._predictions[prediction_id]["output"] = output
                    self._emit(prediction_id, "output")
                self._finish(prediction_id, "succeeded", output, None)

    def _finish(self, prediction_id: str, status: str, output: Any, error: str | None) -> None:
        """Put a prediction in a terminal state and send its `completed` webhook; lock held."""
        prediction = self._predictions[prediction_id]
        running = self._running.pop(prediction_id)
        metrics: dict[str, Any] = {}
        if running.started is not None:
            metrics["predict_time"] = round(time.monotonic() - running.started, 6)
        created = datetime.strptime(prediction["created_at"], "%Y-%m-%dT%H:%M:%S.%fZ")
        metrics["total_time"] = round(
            (datetime.now(UTC).replace(tzinfo=None) - created).total_seconds(), 6
        )
        prediction.update(
            status=status, output=output, error=error, completed_at=_now(), metrics=metrics
        )
        self._emit(prediction_id, "completed", running)

    def _append_log(self, prediction_id: str, line: str) -> None:
        with self._lock:
            prediction = self._predictions[prediction_id]
            if prediction["status"] in TERMINAL:
                return
            prediction["logs"] = (prediction["logs"] or "") + line.rstrip("\n") + "\n"
            self._emit(prediction_id, "logs")

    def _store_file(self, prediction_id: str, name: str, data: bytes, content_type: str) -> str:
        safe = quote(name, safe="")
        with self._lock:
            self._files[f"{prediction_id}/{safe}"] = (bytes(data), content_type)
        return f"{self.base_url}/files/{prediction_id}/{safe}"

    # -- webhooks ---------------------------------------------------------------------------

    def _emit(self, prediction_id: str, event: str, running: _Running | None = None) -> None:
        """Queue the webhooks an event sends (a snapshot of the prediction now); lock held."""
        running = running or self._running.get(prediction_id)
        if running is None:
            return
        body = json.dumps(self._predictions[prediction_id])
        final = event == "completed"
        if running.webhook and event in running.events:
            self._webhooks.put((prediction_id, event, running.webhook, body, final))
        if final and running.webhook_completed:
            self._webhooks.put((prediction_id, event, running.webhook_completed, body, final))

    def _send_webhooks(self) -> None:
        with httpx.Client(timeout=5.0) as client:
            while True:
                item = self._webhooks.get()
                try:
                    if item is None:
                        return
                    self._deliver(client, *item)
                finally:
                    self._webhooks.task_done()

    def _deliver(
        self,
        client: httpx.Client,
        prediction_id: str,
        event: str,
        url: str,
        body: str,
        retry: bool,
    ) -> None:
        webhook_id = "msg_" + secrets.token_urlsafe(20).replace("-", "").replace("_", "")[:27]
        delays = (0.0, *self.webhook_retry_delays) if retry else (0.0,)
        for delay in delays:
            if delay and self._closing.wait(delay):
                return
            timestamp = str(int(time.time()))
            signed = f"{webhook_id}.{timestamp}.{body}".encode()
            signature = base64.b64encode(
                hmac.new(self._webhook_key, signed, hashlib.sha256).digest()
            ).decode()
            headers = {
                "content-type": "application/json",
                "webhook-id": webhook_id,
                "webhook-timestamp": timestamp,
                "webhook-signature": f"v1,{signature}",
            }
            outcome: int | str
            try:
                outcome = client.post(url, content=body.encode(), headers=headers).status_code
            except httpx.HTTPError as exc:
                outcome = f"{type(exc).__name__}: {exc}"
            with self._lock:
                self._webhook_attempts.append((prediction_id, event, url, outcome))
            if isinstance(outcome, int) and 200 <= outcome < 300:
                return


def _injected(failure: _Failure) -> Any:
    headers: dict[str, str] = {}
    if failure.retry_after is not None:
        seconds = failure.retry_after
        headers["Retry-After"] = str(int(seconds)) if seconds == int(seconds) else str(seconds)
    if failure.status == 429:
        return _problem(
            429,
            "Request was throttled.",
            "Request was throttled. Your rate limit resets in ~1s.",
            headers,
        )
    try:
        title = HTTPStatus(failure.status).phrase
    except ValueError:
        title = "Error"
    return _problem(failure.status, title, "Injected by ReplicateServer.fail_next", headers)


async def _json_body(request: Request) -> Any:
    """The request's JSON object, or a 400 problem response to return."""
    try:
        body = json.loads(await request.body() or b"null")
    except ValueError:
        return _problem(400, "Bad request", "The request body is not valid JSON")
    if not isinstance(body, dict):
        return _problem(400, "Bad request", "The request body must be a JSON object")
    return body


def _throwaway_tls(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a certificate it signed for 127.0.0.1/localhost: (ca.pem, cert.pem, key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ReplicateServer test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    os.chmod(paths[2], 0o600)
    return paths
