"""HTTP API v1 under FastAPI's TestClient, no Ray: the real services and stores (SQLite, local
files) behind `serve.http.create_app`. Who may call what, bodies checked before and while they are
read, strict request types, bounded integers, RFC 9110 ranges, and records stored by older
versions."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.testclient import TestClient

from serve.config import AppConfig, resolve_config
from serve.http.app import create_app
from serve.http.auth import AUTH_DEPENDENCIES, LOCAL_OWNER, PUBLIC_ROUTES
from serve.http.errors import ApiError
from serve.http.guard import MAX_JSON_BYTES
from serve.services import ApiServices
from serve.store import variation_key
from tests.http_graph import REMOTE_CLIENT, api_client

KEY = {"Authorization": "Bearer sesame"}
AUDIO = bytes(range(256)) * 8


def _config(tmp_path: Path, keys: list[str] | None = None) -> AppConfig:
    return resolve_config(
        {"storage": {"data_dir": str(tmp_path)}, "auth": {"api_keys": keys or []}}
    )


@pytest.fixture
def keyed(tmp_path: Path) -> tuple[TestClient, ApiServices]:
    """The API with a key configured, called from a remote address."""
    return api_client(_config(tmp_path, ["sesame"]), client=REMOTE_CLIENT)


@pytest.fixture
def local(tmp_path: Path) -> tuple[TestClient, ApiServices]:
    """The embedded default: no keys, called from loopback."""
    return api_client(_config(tmp_path))


def _finished_song(services: ApiServices, owner: str, request: dict[str, Any] | None = None) -> str:
    """A song whose one variation succeeded with a wav file, stored as the conductor would."""

    async def make() -> str:
        jobs = services.jobs
        job, _ = await jobs.create_job(
            owner=owner, request=request or {"prompt": "p"}, seed=1, variations=1
        )
        claimed = await jobs.claim_next("test", lease_s=30, max_attempts=1)
        assert claimed is not None and claimed.lease_token is not None
        key = variation_key(job.id, 0, "audio.wav")
        await services.objects.put(key, AUDIO, "audio/wav")
        await jobs.update_variation(
            job.id, 0, claimed.lease_token, status="succeeded", objects={"wav": key}
        )
        await jobs.update_job(job.id, claimed.lease_token, status="succeeded")
        return job.id

    return asyncio.run(make())


# -- who may call what -----------------------------------------------------------------------------


def _dependencies(dependant: Dependant | None) -> set[Any]:
    if dependant is None:
        return set()
    found = {dependant.call}
    for sub in dependant.dependencies:
        found |= _dependencies(sub)
    return found


def _routes(app: FastAPI) -> list[tuple[str, str, Dependant | None]]:
    """(method, path, dependant) of every route, with the dependencies of the routers that
    include it (FastAPI keeps included routers as branches whose routes are their contexts)."""
    found = []
    for route in app.routes:
        contexts = getattr(route, "effective_route_contexts", None)
        for context in contexts() if contexts is not None else [route]:
            for method in getattr(context, "methods", None) or ():
                found.append((method, context.path, getattr(context, "dependant", None)))
    return found


def test_every_route_requires_a_caller_or_is_listed_public() -> None:
    routes = _routes(create_app(lambda: None))  # type: ignore[arg-type,return-value]
    assert len(routes) > 20
    for method, path, dependant in routes:
        public = (method, path) in PUBLIC_ROUTES
        guarded = bool(_dependencies(dependant) & set(AUTH_DEPENDENCIES))
        assert guarded != public, (
            f"{method} {path} must either require a caller (the routers' default dependency) "
            "or be listed in serve.http.auth.PUBLIC_ROUTES, not both or neither"
        )
    # Nothing is listed public that does not exist.
    assert {(method, path) for method, path, _ in routes} >= PUBLIC_ROUTES


def test_public_routes_answer_without_a_key_and_the_others_refuse(
    keyed: tuple[TestClient, ApiServices],
) -> None:
    client, _ = keyed
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/openapi.json").status_code == 200
    for method, path in [("GET", "/v1/songs"), ("GET", "/v1/pools"), ("GET", "/v1/loras")]:
        refused = client.request(method, path)
        assert refused.status_code == 401 and refused.headers["WWW-Authenticate"] == "Bearer"
        assert client.request(method, path, headers=KEY).status_code == 200


def test_without_keys_only_loopback_is_served(tmp_path: Path) -> None:
    remote, _ = api_client(_config(tmp_path), client=REMOTE_CLIENT)
    refused = remote.get("/v1/songs")
    assert refused.status_code == 401 and "SONGSERVE_API_KEYS" in refused.json()["error"]["message"]
    loopback, _ = api_client(_config(tmp_path))
    assert loopback.get("/v1/songs").status_code == 200


def test_a_missing_key_is_a_401_before_the_body_is_looked_at(
    keyed: tuple[TestClient, ApiServices],
) -> None:
    client, _ = keyed
    for body in ({"duration_s": "thirty"}, {"unknown": 1}):
        answer = client.post("/v1/songs", json=body)
        assert answer.status_code == 401, answer.text
    assert client.post("/v1/tags/normalize", content=b"{not json").status_code == 401


# -- bodies: refused unread, capped while they stream ----------------------------------------------


class _Sent:
    """A raw ASGI request: its body in chunks, counting what the app read."""

    def __init__(self, path: str, chunks: list[bytes], headers: dict[str, str]) -> None:
        self.path, self.chunks, self.headers = path, chunks, headers
        self.read = 0
        self.status: int | None = None
        self.body = b""

    async def run(self, app: Any, client: tuple[str, int] = REMOTE_CLIENT) -> None:
        pending = list(self.chunks)

        async def receive() -> dict[str, Any]:
            if not pending:
                return {"type": "http.disconnect"}
            chunk = pending.pop(0)
            self.read += len(chunk)
            return {"type": "http.request", "body": chunk, "more_body": bool(pending)}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self.status = message["status"]
            elif message["type"] == "http.response.body":
                self.body += message.get("body", b"")

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": self.path,
            "raw_path": self.path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [(k.lower().encode(), v.encode()) for k, v in self.headers.items()],
            "client": client,
            "server": ("testserver", 80),
        }
        await app(scope, receive, send)


def _chunked(total: int, chunk: int = 64 * 1024) -> list[bytes]:
    return [b" " * chunk for _ in range(total // chunk)]


def test_a_chunked_body_without_a_key_is_not_read(keyed: tuple[TestClient, ApiServices]) -> None:
    client, _ = keyed
    sent = _Sent("/v1/verify", _chunked(8 * 1024 * 1024), {"content-type": "multipart/form-data"})
    asyncio.run(sent.run(client.app))
    assert sent.status == 401 and sent.read == 0


def test_a_chunked_body_over_the_limit_is_stopped_at_the_limit(
    keyed: tuple[TestClient, ApiServices],
) -> None:
    client, _ = keyed
    chunk = 64 * 1024
    headers = {"content-type": "application/json", **{k.lower(): v for k, v in KEY.items()}}
    sent = _Sent("/v1/tags/normalize", _chunked(64 * 1024 * 1024, chunk), headers)
    asyncio.run(sent.run(client.app))
    assert sent.status == 413, sent.body
    error = json.loads(sent.body)["error"]
    assert error["code"] == "request_too_large" and error["field"] == "body"
    assert sent.read <= MAX_JSON_BYTES + chunk  # it stopped reading at the first chunk past it


def test_a_declared_length_over_the_limit_is_refused_unread(
    keyed: tuple[TestClient, ApiServices],
) -> None:
    client, services = keyed
    headers = {
        "content-type": "application/json",
        "content-length": str(MAX_JSON_BYTES + 1),
        **{k.lower(): v for k, v in KEY.items()},
    }
    sent = _Sent("/v1/songs", _chunked(MAX_JSON_BYTES + 65536), headers)
    asyncio.run(sent.run(client.app))
    assert sent.status == 413 and sent.read == 0
    # The answer names what sets each route's limit.
    lora_limit = services.config.loras.max_upload_bytes
    upload = {**headers, "content-length": str(lora_limit + 1)}
    sent = _Sent("/v1/loras", _chunked(65536), upload)
    asyncio.run(sent.run(client.app))
    assert sent.status == 413 and sent.read == 0
    message = json.loads(sent.body)["error"]["message"]
    assert f"over {lora_limit} bytes (loras.max_upload_bytes)" in message


# -- one error shape -------------------------------------------------------------------------------


def test_bodies_that_do_not_parse_get_one_answer(local: tuple[TestClient, ApiServices]) -> None:
    client, _ = local
    json_body = client.post(
        "/v1/songs", content=b"{not json", headers={"content-type": "application/json"}
    )
    multipart = client.post(  # no boundary: the form cannot be parsed
        "/v1/verify", content=b"--x\r\ngarbage", headers={"content-type": "multipart/form-data"}
    )
    for answer in (json_body, multipart):
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["code"] == "invalid_body"
        assert answer.json()["error"]["field"] == "body"
    not_an_object = client.post("/v1/songs", json=[1, 2])
    assert not_an_object.status_code == 422 and not_an_object.json()["error"]["field"] == "body"


def test_405_names_the_allowed_methods(local: tuple[TestClient, ApiServices]) -> None:
    client, _ = local
    answer = client.put("/v1/songs")
    assert answer.status_code == 405
    assert set(answer.headers["Allow"].replace(" ", "").split(",")) == {"GET", "POST"}
    assert answer.json()["error"]["code"] == "method_not_allowed"


# -- strict request types --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": "p", "variations": True}, "variations"),
        ({"prompt": "p", "duration_s": "30"}, "duration_s"),
        ({"prompt": "p", "seed": "7"}, "seed"),
        ({"prompt": "p", "instrumental": 0}, "instrumental"),
        ({"prompt": "p", "language": "zz"}, "language"),
        ({"prompt": "\x00\x00\x00"}, "prompt"),
        ({"prompt": "\u200b\u200b"}, "prompt"),
        ({"style": "rock\x07"}, "style"),
    ],
)
def test_loose_values_are_refused_by_name(
    local: tuple[TestClient, ApiServices], body: dict[str, Any], field: str
) -> None:
    client, _ = local
    answer = client.post("/v1/songs", json=body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["field"] == field


def test_well_typed_requests_are_accepted(local: tuple[TestClient, ApiServices]) -> None:
    client, _ = local
    accepted = client.post(
        "/v1/songs",
        json={"lyrics": "[verse]\nla la\n\tla", "style": "folk", "duration_s": 30, "seed": 7},
    )
    assert accepted.status_code == 202, accepted.text
    assert accepted.headers["Location"] == f"/v1/songs/{accepted.json()['id']}"
    tags = client.post("/v1/tags/normalize", json={"text": "dreamy synthpop", "language": "ja"})
    assert tags.status_code == 200 and tags.json()["language"] == "ja"


def test_an_empty_idempotency_key_is_refused(local: tuple[TestClient, ApiServices]) -> None:
    client, _ = local
    answer = client.post("/v1/songs", json={"prompt": "p"}, headers={"Idempotency-Key": ""})
    assert answer.status_code == 422 and answer.json()["error"]["field"] == "idempotency-key"
    same = [
        client.post("/v1/songs", json={"prompt": "p"}, headers={"Idempotency-Key": "k1"})
        for _ in range(2)
    ]
    assert same[0].json()["id"] == same[1].json()["id"]


# -- integers in paths and headers are bounded -----------------------------------------------------


def test_integers_past_the_variations_are_422_not_500(
    local: tuple[TestClient, ApiServices],
) -> None:
    client, services = local
    song_id = _finished_song(services, LOCAL_OWNER)
    for index in (2**63, 2**64 + 1, 4, -1):
        for path in (
            f"/v1/songs/{song_id}/variations/{index}/stems",
            f"/v1/songs/{song_id}/variations/{index}/audio.wav",
            f"/v1/songs/{song_id}/variations/{index}/peaks",
        ):
            answer = client.get(path)
            assert answer.status_code == 422, (path, answer.text)
            assert answer.json()["error"]["field"] == "index"
    huge_id = client.get(f"/v1/songs/{song_id}/events", headers={"Last-Event-ID": str(2**63)})
    assert huge_id.status_code == 422 and huge_id.json()["error"]["field"] == "Last-Event-ID"
    for bad in ("-1", "1e3", "٣"):
        answer = client.get(f"/v1/songs/{song_id}/events", headers={"Last-Event-ID": bad.encode()})
        assert answer.status_code == 422, bad


# -- media -----------------------------------------------------------------------------------------


def test_ranges_follow_rfc_9110(local: tuple[TestClient, ApiServices]) -> None:
    client, services = local
    song_id = _finished_song(services, LOCAL_OWNER)
    path = f"/v1/songs/{song_id}/variations/0/audio.wav"
    assert client.get(path, headers={"Range": "bytes=-0"}).status_code == 416
    reversed_range = client.get(path, headers={"Range": "bytes=5-2"})
    assert reversed_range.status_code == 200 and reversed_range.content == AUDIO
    part = client.get(path, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == AUDIO[10:20]
    assert part.headers["Content-Range"] == f"bytes 10-19/{len(AUDIO)}"
    head = client.head(path)
    assert head.status_code == 200 and head.headers["Content-Length"] == str(len(AUDIO))


def test_a_foreign_song_is_absent(keyed: tuple[TestClient, ApiServices]) -> None:
    client, services = keyed
    song_id = _finished_song(services, "key_someone_else")
    assert client.get(f"/v1/songs/{song_id}", headers=KEY).status_code == 404
    audio = client.get(f"/v1/songs/{song_id}/variations/0/audio.wav", headers=KEY)
    assert audio.status_code == 404


# -- records stored by older versions --------------------------------------------------------------


def test_songs_stored_in_an_older_shape_still_read(local: tuple[TestClient, ApiServices]) -> None:
    client, services = local
    # A request as an older version stored it: a field since removed, a language code since
    # refused, and no loudness_lufs (added later).
    old_request = {"prompt": "p", "tempo": 120, "language": "xx", "duration_s": "30"}
    song_id = _finished_song(services, LOCAL_OWNER, old_request)

    # A `variation` event with a field this version does not know.
    data = {"index": 0, "status": "succeeded", "objects": {}, "mood_score": 0.3}
    asyncio.run(services.jobs.append_event(song_id, "variation", data))
    # Then the `done` that ends every finished song's log, so the event stream below closes
    # after replaying it (without one it stays open until its 15 s keep-alive).
    done = {"status": "succeeded", "succeeded": 1, "failed": 0}
    asyncio.run(services.jobs.append_event(song_id, "done", done))
    song = client.get(f"/v1/songs/{song_id}")
    assert song.status_code == 200, song.text
    assert song.json()["request"]["language"] == "xx"
    assert song.json()["request"]["loudness_lufs"] == -14.0
    listed = client.get("/v1/songs")
    assert listed.status_code == 200 and listed.json()["songs"][0]["id"] == song_id
    events = client.get(f"/v1/songs/{song_id}/events")
    assert events.status_code == 200 and "event: variation" in events.text
    assert "event: done" in events.text


# -- logs ------------------------------------------------------------------------------------------


def test_a_disconnected_event_stream_leaves_no_unretrieved_future(
    local: tuple[TestClient, ApiServices], caplog: pytest.LogCaptureFixture
) -> None:
    client, services = local
    # Starlette's BaseHTTPMiddleware is what left them (under Ray Serve): none may come back.
    from starlette.middleware.base import BaseHTTPMiddleware

    assert not [m for m in client.app.user_middleware if m.cls is BaseHTTPMiddleware]
    song_id = _finished_song(services, LOCAL_OWNER)
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        for _ in range(3):
            with client.stream("GET", f"/v1/songs/{song_id}/events") as stream:
                next(stream.iter_lines())  # the `retry:` line, then hang up
        gc.collect()
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]


# -- event streams have a budget of their own ------------------------------------------------------


def test_event_streams_are_capped_per_caller_and_per_replica(tmp_path: Path) -> None:
    from tests.http_graph import api_services

    config = resolve_config(
        {
            "storage": {"data_dir": str(tmp_path)},
            "api": {"max_event_streams": 3, "max_event_streams_per_owner": 2},
            "deployments": {"api": {"max_ongoing_requests": 40}},
        }
    )
    services = api_services(config)

    async def scenario() -> None:
        async def queued_song(owner: str) -> str:
            job, _ = await services.jobs.create_job(
                owner=owner, request={"prompt": "p"}, seed=1, variations=1
            )
            return job.id

        async def listen(owner: str) -> Any:
            stream = await services.events.open(await queued_song(owner), owner, 0)
            await anext(stream)  # the client is listening: the stream is counted
            return stream

        alice = [await listen("alice"), await listen("alice")]
        with pytest.raises(ApiError) as per_owner:
            await listen("alice")
        assert per_owner.value.status == 429 and per_owner.value.code == "too_many_streams"
        bob = await listen("bob")
        with pytest.raises(ApiError) as per_replica:
            await listen("carol")
        assert per_replica.value.status == 503 and "Retry-After" in per_replica.value.headers
        await alice[0].aclose()  # a client hangs up: its place is free again
        await listen("alice")
        for stream in (alice[1], bob):
            await stream.aclose()

    asyncio.run(scenario())


def test_streams_must_leave_the_ingress_room_for_other_calls() -> None:
    with pytest.raises(ValueError, match="max_event_streams"):
        resolve_config(
            {
                "api": {"max_event_streams": 240},
                "deployments": {"api": {"max_ongoing_requests": 256}},
            }
        )


def test_a_job_store_outage_while_checking_a_key_is_a_503(tmp_path: Path) -> None:
    from serve.store import StoreUnavailable

    client, services = api_client(_config(tmp_path, ["sesame"]), client=REMOTE_CLIENT)

    async def down(*_: object) -> int:
        raise StoreUnavailable("the database restarts")

    services.jobs.count_api_keys = down  # type: ignore[method-assign]
    services.jobs.find_api_key = down  # type: ignore[method-assign]
    answer = client.get("/v1/songs", headers={"Authorization": "Bearer not-an-env-key"})
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "5"
    assert answer.json()["error"]["code"] == "store_unavailable"
