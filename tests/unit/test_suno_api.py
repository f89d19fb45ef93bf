"""The Suno-compatible surface (`/api/*`) over the native API, under TestClient: the mapping of
fields, clips and statuses, the same tenancy and quotas, and `wait_audio`. The graph's own run of
it (real renders, an mp3 to download) is in tests/e2e/test_serve_run.py."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from serve.config import resolve_config
from serve.services import ApiServices
from tests.http_graph import REMOTE_CLIENT, api_client

A = {"Authorization": "Bearer key-a"}
B = {"Authorization": "Bearer key-b"}


def _client(tmp_path: Path, **args: Any) -> tuple[TestClient, ApiServices]:
    config = resolve_config({"storage": {"data_dir": str(tmp_path)}, **args})
    return api_client(config, client=REMOTE_CLIENT)


def _keyed(tmp_path: Path, **args: Any) -> tuple[TestClient, ApiServices]:
    return _client(tmp_path, auth={"api_keys": ["key-a", "key-b"], **args.pop("auth", {})}, **args)


def _stored(services: ApiServices, clip_id: str) -> dict[str, Any]:
    job = asyncio.run(services.jobs.get_job(clip_id.rpartition(".")[0]))
    assert job is not None
    return job.request


def _finish(services: ApiServices, song_id: str) -> None:
    """What the conductor records when both variations succeeded."""

    async def finish() -> None:
        jobs = services.jobs
        claimed = await jobs.claim_next("test", lease_s=30, max_attempts=1)
        assert claimed is not None and claimed.id == song_id and claimed.lease_token
        for index in (0, 1):
            await jobs.update_variation(
                song_id,
                index,
                claimed.lease_token,
                status="succeeded",
                duration_s=30.0,
                model="sketch",
            )
        await jobs.append_event(
            song_id, "done", {}, token=claimed.lease_token, job_fields={"status": "succeeded"}
        )

    asyncio.run(finish())


def test_generate_is_one_song_of_two_clips(tmp_path: Path) -> None:
    client, services = _keyed(tmp_path)
    answer = client.post(
        "/api/generate",
        json={"prompt": "a song about trains", "make_instrumental": True, "model": "chirp-v4"},
        headers=A,
    )
    assert answer.status_code == 200, answer.text
    clips = answer.json()
    song_id = clips[0]["id"].rpartition(".")[0]
    assert [c["id"] for c in clips] == [f"{song_id}.0", f"{song_id}.1"]
    assert {c["status"] for c in clips} == {"queued"} and clips[0]["audio_url"] is None
    stored = _stored(services, clips[0]["id"])
    assert stored["prompt"] == "a song about trains" and stored["instrumental"] is True
    assert stored["model"] == "auto" and stored["variations"] == 2


def test_custom_generate_maps_lyrics_style_and_title(tmp_path: Path) -> None:
    client, services = _keyed(tmp_path)
    body = {
        "prompt": "[Verse]\nrain on glass",
        "tags": "lofi, piano",
        "negative_tags": "drums",
        "title": "Window",
        "continue_clip_id": None,  # sent by some wrappers: ignored
    }
    clips = client.post("/api/custom_generate", json=body, headers=A).json()
    stored = _stored(services, clips[0]["id"])
    assert (stored["lyrics"], stored["style"]) == ("[Verse]\nrain on glass", "lofi, piano")
    assert (stored["negative_style"], stored["title"]) == ("drums", "Window")
    assert clips[0]["tags"] == "lofi, piano" and clips[0]["negative_tags"] == "drums"
    assert clips[0]["title"] == "Window" and clips[0]["lyric"] == "[Verse]\nrain on glass"
    instrumental = client.post(
        "/api/custom_generate", json={**body, "make_instrumental": True}, headers=A
    ).json()
    stored = _stored(services, instrumental[0]["id"])
    assert stored["lyrics"] is None and stored["instrumental"] is True


def test_refusals_name_the_suno_field(tmp_path: Path) -> None:
    client, _ = _keyed(tmp_path)
    bad_tags = client.post("/api/custom_generate", json={"tags": "rock\x00"}, headers=A)
    assert bad_tags.status_code == 422 and bad_tags.json()["error"]["field"] == "tags"
    bad_model = client.post("/api/generate", json={"prompt": "x", "model": "gpt-9"}, headers=A)
    assert bad_model.status_code == 422 and bad_model.json()["error"]["field"] == "model"
    bad_ids = client.get("/api/get", params={"ids": "nonsense"}, headers=A)
    assert bad_ids.status_code == 422 and bad_ids.json()["error"]["field"] == "ids"
    assert client.post("/api/generate", json={"prompt": "x"}).status_code == 401


def test_clips_are_their_owners_and_complete_with_a_signed_mp3(tmp_path: Path) -> None:
    client, services = _keyed(tmp_path)
    clips = client.post("/api/generate", json={"prompt": "a waltz"}, headers=A).json()
    song_id = clips[0]["id"].rpartition(".")[0]
    _finish(services, song_id)
    ids = ",".join(c["id"] for c in clips)
    done = client.get("/api/get", params={"ids": ids}, headers=A).json()
    assert [c["status"] for c in done] == ["complete", "complete"]
    url = done[1]["audio_url"]
    assert url.startswith(f"/v1/songs/{song_id}/variations/1/audio.mp3?") and "sig=" in url
    assert done[0]["duration"] == 30.0 and done[0]["model_name"] == "sketch"
    assert client.get("/api/get", params={"ids": ids}, headers=B).status_code == 404
    assert [c["id"] for c in client.get("/api/get", headers=A).json()] == ids.split(",")
    assert client.get("/api/get", headers=B).json() == []


def test_wait_audio_answers_once_the_clips_are_complete(tmp_path: Path) -> None:
    client, services = _keyed(tmp_path)
    finisher = threading.Thread(target=_finish_when_queued, args=(services,), daemon=True)
    finisher.start()
    started = time.monotonic()
    clips = client.post(
        "/api/generate", json={"prompt": "a march", "wait_audio": True}, headers=A
    ).json()
    assert [c["status"] for c in clips] == ["complete", "complete"]
    assert time.monotonic() - started < 30
    finisher.join(5)


def _finish_when_queued(services: ApiServices) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        jobs, _ = asyncio.run(services.jobs.list_jobs("key_" + _digest("key-a"), limit=1))
        if jobs:
            time.sleep(0.3)
            _finish(services, jobs[0].id)
            return
        time.sleep(0.05)


def _digest(key: str) -> str:
    import hashlib

    return hashlib.sha256(key.encode()).hexdigest()[:16]


def test_get_limit_counts_the_daily_quota_in_credits(tmp_path: Path) -> None:
    client, _ = _keyed(tmp_path, auth={"quotas": {"songs_per_day": 5}})
    assert client.get("/api/get_limit", headers=A).json() == {
        "credits_left": 50,
        "period": "day",
        "monthly_limit": None,
        "monthly_usage": 0,
    }
    client.post("/api/generate", json={"prompt": "x"}, headers=A)
    limit = client.get("/api/get_limit", headers=A).json()
    assert (limit["credits_left"], limit["monthly_usage"]) == (40, 10)
    assert client.get("/api/get_limit", headers=B).json()["credits_left"] == 50


def test_generate_lyrics(tmp_path: Path) -> None:
    client, _ = _keyed(tmp_path)
    lyrics = client.post("/api/generate_lyrics", json={"prompt": "night trains"}, headers=A)
    assert lyrics.status_code == 200 and lyrics.json()["status"] == "complete"
    assert "[" in lyrics.json()["text"] and lyrics.json()["title"] == "night trains"
