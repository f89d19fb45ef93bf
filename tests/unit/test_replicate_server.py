"""The Replicate stand-in (tests/replicate_server.py) driven by the real `replicate` client, sync
and async: file outputs read back, `Prefer: wait` finishing or running out, cancel, a failing
model, auth, retried 503s, a 429 that surfaces, and webhooks the client's own validation accepts."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import replicate
from replicate.exceptions import ModelError as ClientModelError
from replicate.exceptions import ReplicateError
from replicate.helpers import FileOutput
from replicate.webhook import InvalidSignatureError, Webhooks, WebhookSigningSecret

from tests.replicate_server import ModelError, ReplicateServer, RunContext
from tests.webhook_receiver import running_receiver

SONG = "acme/song-model"
VERSION = hashlib.sha256(b"song-model v1").hexdigest()
AUDIO = b"RIFF" + bytes(range(256)) * 8


def song(input: dict[str, Any], ctx: RunContext) -> Any:
    ctx.log("progress 50%")
    ctx.sleep(float(input.get("seconds", 0.05)))
    ctx.log("progress 100%")
    return {"audio": ctx.file("out.wav", AUDIO, "audio/wav"), "title": input["prompt"]}


@pytest.fixture
def server() -> Iterator[ReplicateServer]:
    with ReplicateServer() as server:
        server.add_model(SONG, VERSION, song)
        yield server


def client_for(server: ReplicateServer, token: str | None = None) -> replicate.Client:
    client = replicate.Client(api_token=token or server.token, base_url=server.base_url)
    client.poll_interval = 0.05
    return client


def test_run_gives_file_outputs_the_client_reads_back(monkeypatch: pytest.MonkeyPatch) -> None:
    with ReplicateServer(tls=True) as server:
        assert server.base_url.startswith("https://") and server.ca_file
        monkeypatch.setenv(
            "SSL_CERT_FILE", server.ca_file
        )  # read as the client's transport is built
        server.add_model(SONG, VERSION, song)
        client = client_for(server)

        output: Any = client.run(f"{SONG}:{VERSION}", input={"prompt": "a sea shanty"})

        assert output["title"] == "a sea shanty"
        audio = output["audio"]
        assert isinstance(audio, FileOutput)
        assert audio.url.startswith(f"{server.base_url}/files/")
        assert audio.read() == AUDIO
        assert b"".join(audio) == AUDIO

        async def read_async() -> bytes:
            out: Any = await client_for(server).async_run(
                f"{SONG}:{VERSION}", input={"prompt": "x"}
            )
            return bytes(await out["audio"].aread())

        assert asyncio.run(read_async()) == AUDIO
        # run() blocks on the create (Prefer: wait) and reads the version's schema.
        paths = [(m, p) for m, p, _ in server.requests]
        assert ("GET", f"/v1/models/{SONG}/versions/{VERSION}") in paths
        assert server.requests[0][2]["prefer"] == "wait"


def test_over_plain_http_outputs_stay_url_strings(server: ReplicateServer) -> None:
    client = client_for(server)
    output: Any = client.run(f"{SONG}:{VERSION}", input={"prompt": "x"})
    # The client wraps only https:/data: URLs; the URL itself is served all the same.
    assert isinstance(output["audio"], str)
    assert FileOutput(output["audio"], client).read() == AUDIO
    assert httpx.get(output["audio"]).content == AUDIO  # no auth needed, like replicate.delivery


def test_prefer_wait_returns_the_finished_prediction(server: ReplicateServer) -> None:
    prediction: Any = client_for(server).predictions.create(
        version=VERSION, input={"prompt": "x"}, wait=5
    )

    assert prediction.status == "succeeded"
    assert prediction.model == SONG and prediction.version == VERSION
    assert prediction.output["audio"].endswith("/out.wav")
    assert prediction.logs == "progress 50%\nprogress 100%\n"
    assert prediction.error is None
    assert 0.04 < prediction.metrics["predict_time"] < 2
    assert prediction.completed_at and prediction.completed_at.endswith("Z")
    assert prediction.urls["get"] == f"{server.base_url}/v1/predictions/{prediction.id}"
    assert server.requests[-1][2]["prefer"] == "wait=5"
    assert server.prediction(prediction.id)["data_removed"] is False


def test_prefer_wait_that_runs_out_answers_starting(server: ReplicateServer) -> None:
    client = client_for(server)
    answered: list[float] = []

    def meanwhile() -> None:  # the held request does not hold up others
        time.sleep(0.2)
        began = time.monotonic()
        client_for(server).predictions.list()
        answered.append(time.monotonic() - began)

    other = threading.Thread(target=meanwhile)
    other.start()
    began = time.monotonic()
    prediction = client.predictions.create(
        version=VERSION, input={"prompt": "x", "seconds": 5}, wait=1
    )
    held = time.monotonic() - began
    other.join()

    assert 0.9 < held < 2.5
    assert answered and answered[0] < 0.5
    assert prediction.status == "starting"  # Replicate's answer when the hold runs out
    assert prediction.output is None
    assert client.predictions.get(prediction.id).status == "processing"
    prediction.cancel()
    assert prediction.status == "canceled"

    # run() takes "starting" after a hold as unfinished and polls on to the output.
    output: Any = client.run(f"{SONG}:{VERSION}", input={"prompt": "late", "seconds": 1.3}, wait=1)
    assert output["title"] == "late"


def test_cancel_a_running_prediction_async(server: ReplicateServer) -> None:
    saw_cancel = threading.Event()

    def slow(input: dict[str, Any], ctx: RunContext) -> Any:
        ctx.log("started")
        if ctx.sleep(10):
            saw_cancel.set()
        return "too late"

    slow_version = hashlib.sha256(b"slow").hexdigest()
    server.add_model("acme/slow", slow_version, slow)

    async def scenario() -> Any:
        client = client_for(server)
        prediction = await client.predictions.async_create(version=slow_version, input={})
        assert prediction.status == "starting"
        while (await client.predictions.async_get(prediction.id)).status != "processing":
            await asyncio.sleep(0.01)
        canceled = await client.predictions.async_cancel(prediction.id)
        await prediction.async_wait()
        return canceled, prediction

    canceled, prediction = asyncio.run(scenario())

    assert canceled.status == "canceled" and canceled.output is None
    assert prediction.status == "canceled" and prediction.output is None
    assert saw_cancel.wait(2)
    assert server.cancel_count() == 1
    time.sleep(0.05)  # the run has returned "too late": the prediction stays canceled
    assert server.prediction(prediction.id)["status"] == "canceled"
    assert server.prediction(prediction.id)["output"] is None
    assert server.prediction(prediction.id)["logs"] == "started\n"
    # Canceling a finished prediction leaves it as it is.
    assert client_for(server).predictions.cancel(prediction.id).status == "canceled"


def test_async_create_get_and_wait(server: ReplicateServer) -> None:
    async def scenario() -> Any:
        client = client_for(server)
        prediction = await client.predictions.async_create(version=VERSION, input={"prompt": "y"})
        assert prediction.status == "starting"
        await prediction.async_wait()
        return prediction

    prediction: Any = asyncio.run(scenario())
    assert prediction.status == "succeeded"
    assert prediction.output["title"] == "y"


def test_a_failing_model(server: ReplicateServer) -> None:
    def broken(input: dict[str, Any], ctx: RunContext) -> Any:
        ctx.log("progress 10%")
        raise ModelError("CUDA out of memory")

    broken_version = hashlib.sha256(b"broken").hexdigest()
    server.add_model("acme/broken", broken_version, broken)
    client = client_for(server)

    with pytest.raises(ClientModelError, match="CUDA out of memory") as raised:
        client.run(f"acme/broken:{broken_version}", input={})
    prediction = raised.value.prediction
    assert prediction.status == "failed"
    assert prediction.error == "CUDA out of memory"
    assert prediction.logs == "progress 10%\n"
    assert prediction.output is None


def test_official_models_and_unknown_versions(server: ReplicateServer) -> None:
    client = client_for(server)
    prediction = client.models.predictions.create(model=SONG, input={"prompt": "z"}, wait=5)
    assert prediction.status == "succeeded" and prediction.version == VERSION
    latest = client.models.get(SONG).latest_version
    assert latest is not None and latest.id == VERSION

    with pytest.raises(ReplicateError) as raised:
        client.predictions.create(version="0" * 64, input={})
    assert raised.value.status == 422
    assert raised.value.title == "Invalid version or not permitted"
    with pytest.raises(ReplicateError) as raised:
        client.predictions.get("nosuchprediction")
    assert raised.value.status == 404


def test_a_wrong_token_is_a_401(server: ReplicateServer) -> None:
    with pytest.raises(ReplicateError) as raised:
        client_for(server, token="r8_wrong").predictions.create(version=VERSION, input={})
    assert raised.value.status == 401
    assert raised.value.title == "Unauthenticated"
    assert server.predictions == {}


def test_503s_on_get_are_retried_by_the_client(server: ReplicateServer) -> None:
    client = client_for(server)
    created = client.predictions.create(version=VERSION, input={"prompt": "x"}, wait=5)
    server.fail_next(2, 503, path_prefix=f"/v1/predictions/{created.id}")

    assert client.predictions.get(created.id).status == "succeeded"
    gets = [p for m, p, _ in server.requests if m == "GET"]
    assert gets == [f"/v1/predictions/{created.id}"] * 3


def test_a_429_on_create_surfaces(server: ReplicateServer) -> None:
    client = client_for(server)
    server.fail_next(1, 429, path_prefix="/v1/predictions", method="POST", retry_after=1)

    with pytest.raises(ReplicateError) as raised:
        client.predictions.create(version=VERSION, input={"prompt": "x"})
    assert raised.value.status == 429
    assert [m for m, _, _ in server.requests] == ["POST"]  # the client does not retry a POST
    assert server.predictions == {}
    assert client.predictions.create(version=VERSION, input={"prompt": "x"}).status == "starting"


def test_webhooks_are_signed_as_replicate_signs_them(server: ReplicateServer) -> None:
    client = client_for(server)
    with running_receiver() as receiver:
        prediction = client.predictions.create(
            version=VERSION,
            input={"prompt": "x"},
            webhook=receiver.url,
            webhook_events_filter=["start", "completed"],
        )
        server.wait_idle()

    assert [d.payload["status"] for d in receiver.deliveries] == ["starting", "succeeded"]
    assert all(d.payload["id"] == prediction.id for d in receiver.deliveries)
    assert receiver.deliveries[-1].payload["output"]["title"] == "x"
    secret = client.webhooks.default.secret()
    assert secret.key == server.webhook_secret
    for delivery in receiver.deliveries:
        Webhooks.validate(
            headers=delivery.headers, body=delivery.body.decode(), secret=secret, tolerance=60
        )
    tampered = receiver.deliveries[-1].body.replace(b"succeeded", b"failed")
    with pytest.raises(InvalidSignatureError):
        Webhooks.validate(
            headers=receiver.deliveries[-1].headers, body=tampered.decode(), secret=secret
        )
    with pytest.raises(InvalidSignatureError):
        other = WebhookSigningSecret(key=ReplicateServer().webhook_secret)
        Webhooks.validate(
            headers=receiver.deliveries[-1].headers,
            body=receiver.deliveries[-1].body.decode(),
            secret=other,
        )


def test_default_webhook_events_and_a_retried_completion(server: ReplicateServer) -> None:
    # The receiver refuses the first try of each delivery; only `completed` is retried.
    with running_receiver(lambda _d, seen: 500 if seen == 0 else 204) as receiver:
        client_for(server).predictions.create(
            version=VERSION, input={"prompt": "x"}, webhook=receiver.url
        )
        server.wait_idle()

    events = [event for _, event, _, _ in server.webhook_attempts]
    assert events == ["start", "logs", "logs", "output", "completed", "completed"]
    by_id = receiver.by_id()
    assert len(by_id) == 5  # one webhook-id per delivery, kept across its retries
    assert [d.payload["status"] for d in max(by_id.values(), key=len)] == ["succeeded"] * 2
