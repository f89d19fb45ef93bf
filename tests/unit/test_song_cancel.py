"""`POST /v1/songs/{id}/cancel` under FastAPI's TestClient with the real services and stores: the
song ends `canceled` at once, with a `canceled` event that closes its stream; its quota is free
at once; the conductor driving it is told to stop; finished songs and other callers' songs are
refused. (The conductor's side, and a real render stopping, are in test_conductor.py and the
ACE-Step integration test.)"""

from __future__ import annotations

import asyncio
from pathlib import Path

from serve.config import resolve_config
from serve.http.auth import LOCAL_OWNER
from serve.services import ApiServices
from tests.http_graph import InProcessGraph, api_client

SONG = {"prompt": "a song about stopping", "duration_s": 10, "variations": 2}


async def _claim(services: ApiServices, job_id: str) -> str:
    claimed = await services.jobs.claim_next("test", lease_s=30, max_attempts=3)
    assert claimed is not None and claimed.id == job_id and claimed.lease_token
    return claimed.lease_token


def test_cancel_ends_a_song_at_once_and_frees_its_quota(tmp_path: Path) -> None:
    config = resolve_config(
        {"storage": {"data_dir": str(tmp_path)}, "auth": {"quotas": {"concurrent_jobs": 1}}}
    )
    graph = InProcessGraph(config)
    client, services = api_client(config, graph=graph)
    first = client.post("/v1/songs", json=SONG).json()["id"]
    refused = client.post("/v1/songs", json=SONG)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "concurrent_jobs"
    asyncio.run(_claim(services, first))  # a conductor is driving it

    answer = client.post(f"/v1/songs/{first}/cancel")
    assert answer.status_code == 200, answer.text
    song = answer.json()
    assert song["status"] == "canceled"
    assert [v["status"] for v in song["variations"]] == ["canceled", "canceled"]
    assert graph.stopped == [first]  # the conductor was told to stop rendering it
    # The capacity is free at once: the next song is admitted.
    assert client.post("/v1/songs", json=SONG).status_code == 202

    # Its stream replays to the `canceled` event and closes.
    with client.stream("GET", f"/v1/songs/{first}/events") as stream:
        frames = "".join(stream.iter_text())
    events = [line.split(": ", 1)[1] for line in frames.splitlines() if line.startswith("event:")]
    assert events[-1] == "canceled" and "done" not in events
    assert client.get(f"/v1/songs/{first}").json()["status"] == "canceled"

    # Again is the same answer; a canceled song can then be deleted.
    again = client.post(f"/v1/songs/{first}/cancel")
    assert again.status_code == 200 and again.json()["status"] == "canceled"
    assert graph.stopped == [first]  # not running any more: nothing to stop
    assert client.delete(f"/v1/songs/{first}").status_code == 204


def test_a_queued_song_is_canceled_without_bothering_the_conductor(tmp_path: Path) -> None:
    graph = InProcessGraph(resolve_config({"storage": {"data_dir": str(tmp_path)}}))
    client, services = api_client(graph._config, graph=graph)
    song = client.post("/v1/songs", json=SONG).json()["id"]
    assert client.post(f"/v1/songs/{song}/cancel").json()["status"] == "canceled"
    assert graph.stopped == []
    # No conductor will ever claim it.
    assert asyncio.run(services.jobs.claim_next("test", lease_s=30, max_attempts=3)) is None


def test_finished_and_foreign_songs_cannot_be_canceled(tmp_path: Path) -> None:
    client, services = api_client(resolve_config({"storage": {"data_dir": str(tmp_path)}}))

    async def finished_and_foreign() -> tuple[str, str]:
        job, _ = await services.jobs.create_job(
            owner=LOCAL_OWNER, request={"prompt": "p"}, seed=1, variations=1
        )
        token = await _claim(services, job.id)
        await services.jobs.update_job(job.id, token, status="succeeded")
        other, _ = await services.jobs.create_job(
            owner="own_someone_else", request={"prompt": "p"}, seed=1, variations=1
        )
        return job.id, other.id

    finished, foreign = asyncio.run(finished_and_foreign())
    late = client.post(f"/v1/songs/{finished}/cancel")
    assert late.status_code == 409
    assert late.json()["error"]["code"] == "already_finished"
    assert late.json()["error"]["field"] == "id"
    assert client.get(f"/v1/songs/{finished}").json()["status"] == "succeeded"
    assert client.post(f"/v1/songs/{foreign}/cancel").status_code == 404
    assert asyncio.run(services.jobs.get_job(foreign)).status == "queued"  # type: ignore[union-attr]
    assert client.post("/v1/songs/no-such-song/cancel").status_code == 404
