"""The ACE-Step pool through the whole graph, on the tiny random-weight checkpoint (CPU).

Real diffusers loading and inference, cross-request batching, per-request LoRA hot-swap through
multiplexing, the LoRA registry API and per-step progress.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import read_events, wait_for_song

from .conftest import Deployed, metric_samples

pytestmark = pytest.mark.integration

DeployFn = Callable[..., Deployed]
# Enough denoising steps that a long song spends seconds in them (where a cancel can stop it).
STEPS = 12


@pytest.fixture(scope="module")
def tiny_checkpoint(tiny_acestep_checkpoint: Path) -> Path:
    return tiny_acestep_checkpoint


def _acestep_args(checkpoint: Path) -> dict:
    loras = checkpoint / "loras"
    return {
        "models": {
            "auto_order": ["ace-step", "sketch"],
            "pools": [
                {
                    "name": "DiT_CPU",
                    "model": "ace-step",
                    "ace_step": {
                        "path": str(checkpoint),
                        "device": "cpu",
                        "dtype": "float32",
                        "num_inference_steps": STEPS,
                    },
                    "batching": {"max_batch_size": 8, "batch_wait_timeout_s": 0.2},
                    "deployment": {
                        "num_replicas": 1,
                        "max_ongoing_requests": 16,
                        "actor": {"num_cpus": 0.5},
                    },
                },
                {
                    "name": "Sketch",
                    "model": "sketch",
                    "deployment": {
                        "num_replicas": 1,
                        "max_ongoing_requests": 1,
                        "actor": {"num_cpus": 0.3},
                    },
                },
            ],
        },
        "loras": {
            "preload": [
                {"id": name, "path": str(loras / name / "pytorch_lora_weights.safetensors")}
                for name in ("tiny-a", "tiny-b")
            ]
        },
    }


@pytest.fixture(scope="module")
def app(module_deploy: DeployFn, tiny_checkpoint: Path) -> Deployed:
    """One app for the module: its tests use their own seeds and LoRA ids."""
    deployed = module_deploy(**_acestep_args(tiny_checkpoint))
    deadline = time.monotonic() + 60
    while True:  # preloading registers the LoRAs just after start-up
        listed = {lora["id"] for lora in deployed.client.get("/v1/loras").json()["loras"]}
        if {"tiny-a", "tiny-b"} <= listed:
            return deployed
        assert time.monotonic() < deadline, f"preloaded LoRAs never registered: {listed}"
        time.sleep(0.1)


def _song_wav(app: Deployed, body: dict) -> bytes:
    """The song's samples (decoded: every file's C2PA manifest is unique to its song)."""
    from pipeline.encode import decode_audio

    song_id = app.client.post("/v1/songs", json=body).json()["id"]
    song = wait_for_song(app.client, song_id)
    assert song["status"] == "succeeded", song
    (variation,) = song["variations"]
    assert variation["model"] == "ace-step"
    samples, _ = decode_audio(app.client.get(variation["audio"]["wav"]).content)
    return samples.tobytes()


def test_lora_hot_swap_is_exact_and_never_leaks(app: Deployed) -> None:
    base = {
        "style": "dream pop, female vocals",
        "lyrics": "[verse]\nla la la\n[chorus]\noh oh",
        "duration_s": 5,
        "variations": 1,
        "seed": 11,
        "model": "ace-step",
    }

    def with_lora(lora_id: str, scale: float = 1.0) -> dict:
        return {**base, "lora": {"id": lora_id, "scale": scale}}

    base_audio = _song_wav(app, base)
    a_audio = _song_wav(app, with_lora("tiny-a"))
    b_audio = _song_wav(app, with_lora("tiny-b"))
    a_again = _song_wav(app, with_lora("tiny-a"))
    base_after = _song_wav(app, base)
    a_at_zero = _song_wav(app, with_lora("tiny-a", 0.0))

    assert a_audio != base_audio and b_audio != base_audio and a_audio != b_audio
    assert a_again == a_audio  # A, then B, then A gives A's audio again
    assert base_after == base_audio  # no adapter leaks into base requests
    assert a_at_zero == base_audio  # scale 0 is the base model


EIGHT_STYLES = [
    "synthwave",
    "lofi hip hop",
    "deep house",
    "indie folk",
    "drum and bass",
    "bossa nova",
    "ambient",
    "punk rock",
]


def _batched_songs(histogram: str, **labels: str) -> float:
    """Observations above 1 in a batch-size histogram, summed over replicas."""
    total = sum(value for _, value in metric_samples(f"{histogram}_count", **labels))
    buckets = metric_samples(f"{histogram}_bucket", **labels)
    singles = sum(value for tags, value in buckets if tags["le"] == "1.0")
    return total - singles


def test_eight_concurrent_songs_of_different_styles_are_batched(app: Deployed) -> None:
    # Eight different songs (style, tags, seed): any model call of more than one song mixed
    # the conditioning of different requests.
    bodies = [
        {
            "style": style,
            "instrumental": True,
            "duration_s": 5,
            "variations": 1,
            "seed": 100 + k,
            "model": "ace-step",
        }
        for k, style in enumerate(EIGHT_STYLES)
    ]
    dit = {"deployment": "DiT_CPU"}
    calls_before = _batched_songs("ray_songserve_decoder_songs_per_model_call", **dit)
    serve_before = _batched_songs("ray_serve_actual_batch_size", **dit)
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda b: app.client.post("/v1/songs", json=b).json()["id"], bodies))
    songs = [wait_for_song(app.client, song_id, timeout_s=180) for song_id in ids]
    assert all(song["status"] == "succeeded" for song in songs)
    captions = {song["tags"]["caption"] for song in songs}
    assert len(captions) == 8, captions
    batch_sizes = [app.job(song_id).variations[0].render["batch_size"] for song_id in ids]
    assert max(batch_sizes) > 1, batch_sizes  # songs of different styles shared model calls

    # The same is visible in the metrics Ray exports (reported every 0.5 s in this session).
    deadline = time.monotonic() + 30
    while True:
        calls = _batched_songs("ray_songserve_decoder_songs_per_model_call", **dit)
        gathered = _batched_songs("ray_serve_actual_batch_size", **dit)
        if calls > calls_before and gathered > serve_before:
            break
        assert time.monotonic() < deadline, (calls_before, calls, serve_before, gathered)
        time.sleep(0.5)
    rendered = metric_samples("ray_songserve_decoder_songs_total", lora="base", **dit)
    assert sum(value for _, value in rendered) >= 8


def test_progress_reports_denoising_steps(app: Deployed) -> None:
    song_id = app.client.post(
        "/v1/songs",
        json={
            "style": "jazz",
            "instrumental": True,
            "duration_s": 5,
            "variations": 1,
            "model": "ace-step",
        },
    ).json()["id"]
    events = read_events(app.client, song_id)
    steps = [
        (d["step"], d["steps"])
        for _, t, d in events
        if t == "progress" and d["stage"] == "generating"
    ]
    assert steps and all(total == STEPS for _, total in steps)
    assert steps[-1] == (STEPS, STEPS)
    assert events[-1][1] == "done"


def _stopped_renders() -> float:
    samples = metric_samples("ray_songserve_decoder_renders_stopped_total", deployment="DiT_CPU")
    return sum(value for _, value in samples)


def test_cancel_stops_a_running_render(app: Deployed) -> None:
    """A canceled song stops its render on the decoder at the next denoising step: Serve cancels
    the conductor's call, the router's call to the decoder, and the decoder stops the model."""
    client = app.client
    stopped_before = _stopped_renders()
    # 600 s of audio: about a second per step on the tiny model here, then a minute of decoding.
    body = {"style": "ambient", "instrumental": True, "duration_s": 600, "model": "ace-step"}
    song_id = client.post("/v1/songs", json={**body, "variations": 1}).json()["id"]
    with client.stream("GET", f"/v1/songs/{song_id}/events", timeout=120) as stream:
        for line in stream.iter_lines():  # until the first denoising step is reported
            if line.startswith("data:") and '"stage":"generating"' in line and '"step"' in line:
                break
    canceled = client.post(f"/v1/songs/{song_id}/cancel")
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
    events = read_events(client, song_id)
    assert events[-1][1] == "canceled"

    # The decoder counted the stopped render (exported every 0.5 s in this session)...
    deadline = time.monotonic() + 30
    while _stopped_renders() <= stopped_before:
        assert time.monotonic() < deadline, "the decoder never stopped the abandoned render"
        time.sleep(0.5)
    # ...and its one replica is free: a short song renders now, not after the long one.
    short = client.post("/v1/songs", json={**body, "duration_s": 5, "variations": 1}).json()
    assert wait_for_song(client, short["id"], timeout_s=60)["status"] == "succeeded"
    job = app.job(song_id)
    assert job.status == "canceled" and job.variations[0].status == "canceled"
    assert "raw" not in job.variations[0].render  # nothing was rendered to its end


def test_auto_prefers_ace_step(app: Deployed) -> None:
    song_id = app.client.post(
        "/v1/songs", json={"style": "rock", "duration_s": 5, "variations": 1}
    ).json()["id"]
    assert wait_for_song(app.client, song_id)["variations"][0]["model"] == "ace-step"


def test_lora_registry_api(app: Deployed, tiny_checkpoint: Path) -> None:
    client = app.client
    listed = client.get("/v1/loras").json()["loras"]
    assert {lora["id"] for lora in listed} >= {"tiny-a", "tiny-b"}
    assert all(lora["model"] == "ace-step" and lora["rank"] > 0 for lora in listed)
    preloaded = [lora for lora in listed if lora["id"] in {"tiny-a", "tiny-b"}]
    assert all(lora["scope"] == "shared" and lora["read_only"] for lora in preloaded)
    assert client.delete("/v1/loras/tiny-a").status_code == 403  # the operator's: read-only

    weights = (tiny_checkpoint / "loras/tiny-a/pytorch_lora_weights.safetensors").read_bytes()
    created = client.post(
        "/v1/loras", data={"id": "mine"}, files={"file": ("w.safetensors", weights)}
    )
    assert created.status_code == 201, created.text
    assert created.json()["id"] == "mine" and created.json()["scope"] == "own"
    again = client.post("/v1/loras", data={"id": "mine"}, files={"file": ("w", weights)})
    assert again.status_code == 409 and again.json()["error"]["code"] == "lora_exists"

    not_safetensors = client.post(
        "/v1/loras", data={"id": "bad"}, files={"file": ("w.bin", b"\x80\x04pickle")}
    )
    assert not_safetensors.status_code == 422
    assert not_safetensors.json()["error"]["field"] == "file"
    bad_id = client.post("/v1/loras", data={"id": "Bad Id!"}, files={"file": ("w", weights)})
    assert bad_id.status_code == 422 and bad_id.json()["error"]["field"] == "id"

    unknown = client.post(
        "/v1/songs", json={"style": "pop", "model": "ace-step", "lora": {"id": "nope"}}
    )
    assert unknown.status_code == 422 and unknown.json()["error"]["field"] == "lora.id"
    sketch_lora = client.post(
        "/v1/songs", json={"style": "pop", "model": "sketch", "lora": {"id": "mine"}}
    )
    assert sketch_lora.status_code == 422 and "does not take LoRAs" in sketch_lora.text

    assert client.delete("/v1/loras/mine").status_code == 204
    assert client.delete("/v1/loras/mine").status_code == 404
    assert "mine" not in {lora["id"] for lora in client.get("/v1/loras").json()["loras"]}


def _raw_render(app: Deployed, song_id: str) -> Any:
    """A variation's raw render (before mastering), read from the app's object store."""
    import asyncio

    from pipeline.audio import raw_render_from_bytes
    from serve.store import open_object_store, raw_render_key

    data = asyncio.run(open_object_store(app.storage).get(raw_render_key(song_id, 0)))
    return raw_render_from_bytes(data)


def _finished(app: Deployed, body: dict) -> dict:
    accepted = app.client.post("/v1/songs", json={"variations": 1, **body})
    assert accepted.status_code == 202, accepted.text
    song = wait_for_song(app.client, accepted.json()["id"])
    assert song["status"] == "succeeded", song
    return song


def test_ace_step_extends_repaints_covers_and_takes_a_reference(app: Deployed) -> None:
    """ACE-Step's edits through the graph on the tiny checkpoint (diffusers' AceStepPipeline
    repaint and cover tasks, reference audio): each is a new song recording its parent, whose
    files' C2PA manifests name the source's file as their ingredient, and extend and repaint keep
    the source's rendered samples outside their windows (the sketch model's exact edits are
    tested in tests/unit/test_song_editing.py)."""
    import numpy as np

    from pipeline.encode import encode_audio
    from pipeline.provenance import read_credentials

    sr = 48_000
    base = {"style": "lofi hip hop", "instrumental": True, "model": "ace-step", "seed": 5}
    source = _finished(app, {**base, "duration_s": 6, "title": "Sea Song"})
    before = _raw_render(app, source["id"])

    extended = _finished(
        app, {**base, "task": "extend", "source": {"song": source["id"]}, "extend_s": 4}
    )
    after = _raw_render(app, extended["id"])
    assert after.shape[-1] == 10 * sr
    np.testing.assert_array_equal(after[:, : before.shape[-1]], before)
    assert extended["variations"][0]["model"] == "ace-step"
    assert extended["request"]["source"] == {"song": source["id"], "variation": 0}
    # Its files' manifests: opened from the source's file (a parentOf ingredient), then edited.
    report = read_credentials(app.client.get(extended["variations"][0]["audio"]["m4a"]).content)
    assert report["valid"], report
    manifest = report["manifest"]
    assert [a["action"] for a in manifest["actions"]] == ["c2pa.opened", "c2pa.edited"]
    [ingredient] = manifest["ingredients"]
    assert ingredient["title"] == "Sea Song" and ingredient["relationship"] == "parentOf"
    assert manifest["generation"]["edit"] == "extend"
    assert manifest["generation"]["source"] == f"songserve:song/{source['id']}/variation/0"

    repainted = _finished(
        app,
        {
            **base,
            "task": "repaint",
            "source": {"song": source["id"]},
            "window": {"start_s": 2, "end_s": 4},
        },
    )
    again = _raw_render(app, repainted["id"])
    np.testing.assert_array_equal(again[:, : 2 * sr], before[:, : 2 * sr])
    np.testing.assert_array_equal(again[:, 4 * sr :], before[:, 4 * sr :])

    # A cover of an upload, with a reference: the tiny checkpoint has the audio tokenizer.
    tone = (0.3 * np.sin(np.arange(5 * 44_100) / 44_100 * 2 * np.pi * 196))[None, :]
    upload = app.client.post(
        "/v1/uploads",
        files={"file": ("hum.wav", encode_audio(tone.astype(np.float32), 44_100, "wav"))},
    )
    assert upload.status_code == 201, upload.text
    upload_id = upload.json()["id"]
    cover = _finished(
        app,
        {
            **base,
            "style": "bossa nova",
            "task": "cover",
            "source": {"upload": upload_id},
            "cover_strength": 0.5,
            "reference_audio": {"song": source["id"]},
        },
    )
    assert cover["variations"][0]["duration_s"] == pytest.approx(5.0, abs=0.01)
    assert cover["request"]["source"] == {"upload": upload_id}
    assert cover["request"]["reference_audio"] == {"song": source["id"], "variation": 0}
    # The sketch pool cannot cover: asked for it by name, the API says so before any work.
    refused = app.client.post(
        "/v1/songs",
        json={**base, "model": "sketch", "task": "cover", "source": {"upload": upload_id}},
    )
    assert refused.status_code == 422 and refused.json()["error"]["field"] == "task"
