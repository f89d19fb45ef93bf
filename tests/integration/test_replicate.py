"""A Replicate pool through the whole graph: `model: auto` sends a Chinese song to YuE, the real
`replicate` client in the decoder replica talks to `tests.replicate_server` (a local server that
speaks Replicate's predictions protocol; Replicate cannot be reached from here), and the song is
mastered, signed and stored like any other, its prediction recorded. A canceled song cancels its
prediction. The registered "YuE" is a test double that returns a tone as an mp3 file."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from pipeline.encode import encode_audio
from tests.helpers import read_events, wait_for_song
from tests.replicate_server import ReplicateServer, RunContext

from .conftest import REPLICATE_TOKEN, REPLICATE_TOKEN_ENV, Deployed

pytestmark = pytest.mark.integration

YUE_VERSION = "c" * 64


def _yue_double(inputs: dict[str, Any], ctx: RunContext) -> Any:
    """Stands in for YuE: a 44.1 kHz mono tone as long as the tokens asked for, as an mp3; a
    genre description naming "ambient" runs until canceled (a long song)."""
    import numpy as np

    if "ambient" in inputs["genre_description"]:
        ctx.sleep(120)
        return None
    ctx.log("stage 1: 50%")
    seconds = inputs["max_new_tokens"] * inputs["num_segments"] / 100
    t = np.arange(round(seconds * 44_100)) / 44_100
    tone = (0.3 * np.sin(2 * np.pi * 330 * t))[None, :].astype(np.float32)
    return ctx.file("yue.mp3", encode_audio(tone, 44_100, "mp3"), "audio/mpeg")


@pytest.fixture(scope="module")
def replicate() -> Iterator[ReplicateServer]:
    with ReplicateServer(token=REPLICATE_TOKEN) as server:
        server.add_model("fofr/yue", YUE_VERSION, _yue_double)
        yield server


@pytest.fixture(scope="module")
def app(module_deploy: Any, replicate: ReplicateServer) -> Deployed:
    deployed: Deployed = module_deploy(
        models={
            "auto_order": ["sketch"],
            "pools": [
                {
                    "name": "Sketch",
                    "model": "sketch",
                    "deployment": {"num_replicas": 1, "actor": {"num_cpus": 0.3}},
                },
                {
                    "name": "YuE",
                    "model": "yue",
                    "replicate": {
                        "model": "fofr/yue",
                        "version": YUE_VERSION,
                        "api_token_env": REPLICATE_TOKEN_ENV,
                        "base_url": replicate.base_url,
                        "poll_interval_s": 0.2,
                        "wait_s": 1,
                    },
                    "batching": {"max_batch_size": 4, "batch_wait_timeout_s": 0.1},
                    "deployment": {
                        "num_replicas": 1,
                        "max_ongoing_requests": 8,
                        "actor": {"num_cpus": 0.1},
                    },
                },
            ],
        }
    )
    return deployed


def test_auto_sends_a_chinese_song_to_yue_and_records_its_prediction(
    app: Deployed, replicate: ReplicateServer
) -> None:
    client = app.client
    body = {"prompt": "夏天的海边", "style": "mandopop, piano", "language": "zh", "duration_s": 8}
    song_id = client.post("/v1/songs", json={**body, "variations": 2}).json()["id"]
    song = wait_for_song(client, song_id, timeout_s=120)
    assert song["status"] == "succeeded", song
    predictions = replicate.predictions
    for variation in song["variations"]:
        assert variation["model"] == "yue"
        assert variation["model_version"] == f"fofr/yue:{YUE_VERSION}"
        assert variation["duration_s"] == pytest.approx(8.0, abs=0.05)
        details = variation["model_details"]
        prediction = predictions[details["prediction_id"]]
        assert prediction["status"] == "succeeded" and prediction["version"] == YUE_VERSION
        assert details["predict_time_s"] == pytest.approx(prediction["metrics"]["predict_time"])
        assert prediction["input"]["lyrics"].startswith("[")  # YuE's lyric form
        # Mastered, signed and stored like any song.
        assert variation["provenance"]["c2pa"]["signed"]
        audio = client.get(variation["audio"]["m4a"])
        assert audio.status_code == 200 and len(audio.content) > 10_000
    ids = [v["model_details"]["prediction_id"] for v in song["variations"]]
    assert len({predictions[i]["input"]["seed"] for i in ids}) == 2  # a seed per variation

    english = client.post("/v1/songs", json={**body, "language": "en", "variations": 1})
    assert wait_for_song(client, english.json()["id"])["variations"][0]["model"] == "sketch"


def test_a_canceled_song_cancels_its_prediction(app: Deployed, replicate: ReplicateServer) -> None:
    client = app.client
    before = replicate.cancel_count()
    body = {"style": "ambient", "language": "zh", "instrumental": True, "duration_s": 30}
    song_id = client.post("/v1/songs", json={**body, "variations": 1}).json()["id"]
    deadline = time.monotonic() + 60
    while not any(
        p["input"].get("genre_description", "").startswith("ambient")
        and p["status"] == "processing"
        for p in replicate.predictions.values()
    ):
        assert time.monotonic() < deadline, "the prediction never started"
        time.sleep(0.2)
    assert client.post(f"/v1/songs/{song_id}/cancel").json()["status"] == "canceled"
    assert read_events(client, song_id)[-1][1] == "canceled"
    deadline = time.monotonic() + 30
    while replicate.cancel_count() == before:
        assert time.monotonic() < deadline, "the prediction was never canceled"
        time.sleep(0.2)
    [prediction] = [
        p for p in replicate.predictions.values() if "ambient" in p["input"]["genre_description"]
    ]
    replicate.wait_idle()
    assert replicate.prediction(prediction["id"])["status"] == "canceled"
