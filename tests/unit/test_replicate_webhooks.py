"""Replicate pools with `delivery: webhook`: the real ingress (`POST /v1/replicate/webhook` in the
real app, served by uvicorn on a loopback port) receives `tests.replicate_server`'s signed
deliveries and stores them in the object store, where the engine, given the lookup the decoder
gives it (`delivered_prediction_lookup`), finds them. Nothing is faked between the two: the
deliveries are real HTTP POSTs signed as Replicate signs them."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from pipeline.engines.replicate import ReplicateSongModel
from pipeline.song_models import RenderedAudio, RenderFailed, load_song_model
from serve.config import AppConfig, DecoderPoolConfig, resolve_config
from serve.http.app import create_app
from serve.services import ApiServices
from serve.services.replicate_webhooks import delivered_prediction_lookup
from serve.store import open_object_store
from serve.webhooks import signed_headers
from tests.http_graph import REMOTE_CLIENT, api_client, api_services
from tests.replicate_server import ModelError, ReplicateServer, RunContext
from tests.unit.test_replicate_pool import YUE_VERSION, _request, _song_file

TOKEN_ENV = "TEST_REPLICATE_TOKEN"
SECRET_ENV = "TEST_REPLICATE_WEBHOOK_SECRET"
WEBHOOK_PATH = "/v1/replicate/webhook"
API_KEY = "sesame"  # the API requires keys: the webhook route must answer without one


def _replicate(server: ReplicateServer, **settings: Any) -> dict[str, Any]:
    return {
        "model": "fofr/yue",
        "version": YUE_VERSION,
        "api_token_env": TOKEN_ENV,
        "base_url": server.base_url,
        "wait_s": 0,
        "poll_interval_s": 0.05,
        "delivery": "webhook",
        "webhook_secret_env": SECRET_ENV,
        "webhook_check_s": 0.05,
        "fallback_poll_s": 30.0,
        **settings,
    }


def _config(tmp_path: Path, replicate: dict[str, Any] | None) -> AppConfig:
    pools: list[dict[str, Any]] = [{"name": "Sketch", "model": "sketch"}]
    if replicate is not None:
        pools.append({"name": "YuE", "model": "yue", "replicate": replicate})
    return resolve_config(
        {
            "storage": {"data_dir": str(tmp_path)},
            "auth": {"api_keys": [API_KEY]},
            "models": {"pools": pools},
        }
    )


@dataclass
class Ingress:
    url: str  # the webhook route's URL on this loopback port
    config: AppConfig
    services: ApiServices
    read: list[dict[str, Any]] = field(default_factory=list)  # what engines' lookups returned

    @property
    def pool(self) -> DecoderPoolConfig:
        return next(p for p in self.config.models.pools if p.replicate is not None)

    def stored(self) -> list[str]:
        return asyncio.run(self.services.objects.list_keys("replicate/"))

    def engine(self, server: ReplicateServer) -> ReplicateSongModel:
        """The engine as the decoder builds it: the lookup reads the ingress's object store."""
        lookup = delivered_prediction_lookup(open_object_store(self.config.storage))

        async def recorded(prediction_id: str) -> dict[str, Any] | None:
            found = await lookup(prediction_id)
            if found is not None:
                self.read.append(found)
            return found

        engine = load_song_model(self.pool, delivered=recorded)
        assert isinstance(engine, ReplicateSongModel)
        return engine


@contextmanager
def running_ingress(tmp_path: Path, server: ReplicateServer, **settings: Any) -> Iterator[Ingress]:
    """The real app on a free loopback port, its pool's `webhook_url` pointing at it (unless
    `settings` name another)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}{WEBHOOK_PATH}"
    config = _config(tmp_path, _replicate(server, **{"webhook_url": url, **settings}))
    services = api_services(config)
    app = create_app(lambda: services)
    uvicorn_server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    )
    thread = threading.Thread(
        target=uvicorn_server.run, kwargs={"sockets": [sock]}, daemon=True, name="ingress"
    )
    thread.start()
    deadline = time.monotonic() + 10
    while not uvicorn_server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the ingress did not start"
        time.sleep(0.01)
    try:
        yield Ingress(url, config, services)
    finally:
        uvicorn_server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[ReplicateServer]:
    with ReplicateServer() as running:
        monkeypatch.setenv(TOKEN_ENV, running.token)
        monkeypatch.setenv(SECRET_ENV, running.webhook_secret)
        yield running


def _gets(server: ReplicateServer) -> list[str]:
    """The polls: GET /v1/predictions/{id}."""
    return [p for m, p, _ in server.requests if m == "GET" and p.startswith("/v1/predictions/")]


def test_results_arrive_by_signed_webhook_without_polling(
    tmp_path: Path, server: ReplicateServer
) -> None:
    def run(inputs: dict[str, Any], ctx: RunContext) -> Any:
        ctx.log("generating 50%")  # a `logs` event: not asked for, so never sent
        ctx.sleep(0.3)
        if inputs["seed"] == 42:
            raise ModelError("CUDA out of memory while decoding segment 2")
        return ctx.file("out.mp3", _song_file(2.0), "audio/mpeg")

    server.add_model("fofr/yue", YUE_VERSION, run)
    with running_ingress(tmp_path, server) as ingress:
        engine = ingress.engine(server)
        started = time.monotonic()
        try:
            good, bad = engine.render(
                [_request(0, duration_s=2.0), _request(1, duration_s=2.0)], lambda s, n: None
            )
        finally:
            engine.close()
        elapsed = time.monotonic() - started
        server.wait_idle()
        stored = ingress.stored()

    assert isinstance(good, RenderedAudio) and good.audio.shape == (2, 96_000)
    assert isinstance(bad, RenderFailed)
    assert "CUDA out of memory while decoding segment 2" in str(bad)
    # Created with the webhook URL and only the `completed` event; delivered signed, accepted.
    attempts = server.webhook_attempts
    assert sorted(attempts) == sorted(
        (prediction_id, "completed", ingress.url, 204) for prediction_id in server.predictions
    )
    assert elapsed < 15  # the webhook's result, well before the 30 s fallback poll
    assert _gets(server) == []  # Replicate was never polled
    # Stored where any decoder replica looks, trimmed (no input, the lyrics; no logs), read once
    # by the waiting render and deleted.
    assert sorted(p["id"] for p in ingress.read) == sorted(server.predictions)
    assert stored == []
    good_id = good.details["prediction_id"]
    kept = next(p for p in ingress.read if p["id"] == good_id)
    assert kept["status"] == "succeeded"
    assert "input" not in kept and "logs" not in kept
    # The delivered metrics travel with the audio, as a polled prediction's do.
    predict_time = server.prediction(good_id)["metrics"]["predict_time"]
    assert good.details["predict_time_s"] == pytest.approx(predict_time)


@pytest.mark.parametrize("lost", ["wrong_url", "wrong_secret"])
def test_a_lost_webhook_still_finishes_by_the_fallback_poll(
    tmp_path: Path, server: ReplicateServer, monkeypatch: pytest.MonkeyPatch, lost: str
) -> None:
    server.add_model(
        "fofr/yue",
        YUE_VERSION,
        lambda inputs, ctx: ctx.sleep(0.2) or ctx.file("out.mp3", _song_file(2.0), "audio/mpeg"),
    )
    settings: dict[str, Any] = {"fallback_poll_s": 0.5}
    if lost == "wrong_url":  # nothing listens there
        with socket.socket() as unused:
            unused.bind(("127.0.0.1", 0))
            port = unused.getsockname()[1]
        settings["webhook_url"] = f"http://127.0.0.1:{port}{WEBHOOK_PATH}"
    else:  # the ingress holds another account's secret: the real deliveries are refused
        monkeypatch.setenv(SECRET_ENV, ReplicateServer().webhook_secret)
    with running_ingress(tmp_path, server, **settings) as ingress:
        engine = ingress.engine(server)
        started = time.monotonic()
        try:
            [result] = engine.render([_request(duration_s=2.0)], lambda s, n: None)
        finally:
            engine.close()
        elapsed = time.monotonic() - started
        server.wait_idle()
        stored = ingress.stored()

    assert isinstance(result, RenderedAudio)
    attempts = server.webhook_attempts
    assert attempts and all(outcome != 204 for *_, outcome in attempts)
    if lost == "wrong_secret":
        assert {outcome for *_, outcome in attempts} == {401}
    assert stored == []
    # Replicate asked only once per fallback_poll_s, not every poll_interval_s.
    assert 1 <= len(_gets(server)) <= elapsed / 0.5 + 1


def _signed(secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    return signed_headers(
        secret, "msg_test", body, int(time.time()) if timestamp is None else timestamp
    )


def test_unsigned_tampered_or_stale_deliveries_are_refused(
    tmp_path: Path, server: ReplicateServer
) -> None:
    config = _config(tmp_path, _replicate(server, webhook_url="https://songs.example.com/x"))
    client, services = api_client(config, client=REMOTE_CLIENT)
    prediction = {"id": "abc123", "status": "succeeded", "output": "https://x/a.mp3"}
    body = json.dumps({**prediction, "input": {"lyrics": "secret words"}}).encode()
    secret = server.webhook_secret
    stale = int(time.time()) - 6 * 60
    tampered = body.replace(b"succeeded", b"failed\x20\x20\x20")
    other_secret = ReplicateServer().webhook_secret
    for headers, sent in [
        ({"content-type": "application/json"}, body),  # unsigned
        (_signed(secret, body), tampered),
        (_signed(secret, body, stale), body),
        (_signed(other_secret, body), body),
    ]:
        answer = client.post(WEBHOOK_PATH, content=sent, headers=headers)
        assert answer.status_code == 401, answer.text
        assert answer.json()["error"]["code"] == "invalid_signature"
    assert asyncio.run(services.objects.list_keys("replicate/")) == []

    # Signed: kept (without the input), and without any API key.
    answer = client.post(WEBHOOK_PATH, content=body, headers=_signed(secret, body))
    assert answer.status_code == 204, answer.text
    kept = asyncio.run(delivered_prediction_lookup(services.objects)("abc123"))
    assert kept is not None and kept["status"] == "succeeded" and "input" not in kept
    # When it came is kept too, so the retention sweep can clear deliveries nobody reads.
    assert abs(kept["received_at"] - time.time()) < 60
    # Events before the end are acknowledged and not kept; a body that is no prediction is a 400.
    starting = json.dumps({"id": "def456", "status": "processing"}).encode()
    assert (
        client.post(WEBHOOK_PATH, content=starting, headers=_signed(secret, starting)).status_code
        == 204
    )
    assert asyncio.run(delivered_prediction_lookup(services.objects)("def456")) is None
    junk = b'{"id": "../../etc", "status": "succeeded"}'
    assert client.post(WEBHOOK_PATH, content=junk, headers=_signed(secret, junk)).status_code == 400
    # Bodies are bounded before anything is read.
    huge = b"{" + b" " * (300 * 1024) + b"}"
    assert client.post(WEBHOOK_PATH, content=huge, headers=_signed(secret, huge)).status_code == 413
    # Other routes still want a key.
    assert client.get("/v1/songs").status_code == 401


def test_without_a_secret_or_a_webhook_pool_the_route_says_why(
    tmp_path: Path, server: ReplicateServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SECRET_ENV)
    config = _config(tmp_path, _replicate(server, webhook_url="https://songs.example.com/x"))
    client, _ = api_client(config, client=REMOTE_CLIENT)
    answer = client.post(WEBHOOK_PATH, content=b"{}")
    assert answer.status_code == 503 and SECRET_ENV in answer.json()["error"]["message"]

    client, _ = api_client(_config(tmp_path / "poll", None), client=REMOTE_CLIENT)
    answer = client.post(WEBHOOK_PATH, content=b"{}")
    assert answer.status_code == 404 and "delivery: webhook" in answer.json()["error"]["message"]


def test_webhook_delivery_is_validated(server: ReplicateServer) -> None:
    def pool(**settings: Any) -> DecoderPoolConfig:
        replicate = {k: v for k, v in _replicate(server, **settings).items() if v is not None}
        return DecoderPoolConfig.model_validate(
            {"name": "YuE", "model": "yue", "replicate": replicate}
        )

    with pytest.raises(ValueError, match=r"models\.pools\[YuE\]\.replicate\.webhook_url: required"):
        pool()
    with pytest.raises(ValueError, match=r"models\.pools\[YuE\]\.replicate\.webhook_url: .*http"):
        pool(webhook_url="songs.example.com/v1/replicate/webhook")
    with pytest.raises(ValueError, match=r"webhook_url: applies only with `delivery: webhook`"):
        pool(delivery="poll", webhook_url="https://songs.example.com/v1/replicate/webhook")
    with pytest.raises(ValueError, match="delivery"):
        pool(delivery="email", webhook_url="https://songs.example.com/v1/replicate/webhook")
    valid = pool(webhook_url="https://songs.example.com/v1/replicate/webhook")
    assert valid.replicate is not None and valid.replicate.fallback_poll_s == 30.0
    defaults = DecoderPoolConfig.model_validate(
        {"name": "YuE", "model": "yue", "replicate": {"model": "fofr/yue", "version": YUE_VERSION}}
    ).replicate
    assert defaults is not None and defaults.delivery == "poll"
    assert defaults.webhook_secret_env == "REPLICATE_WEBHOOK_SECRET"
    # The engine of a webhook pool needs somewhere to find its deliveries.
    with pytest.raises(ValueError, match=r"replicate\.delivery: webhook needs a decoder"):
        ReplicateSongModel(valid, environ={TOKEN_ENV: server.token})
