"""Auth and admission control on a real local Ray."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest

from tests.helpers import wait_for_song

from .conftest import Deployed

pytestmark = pytest.mark.integration

DeployFn = Callable[..., Deployed]


@pytest.fixture(scope="module")
def keyed_app(module_deploy: DeployFn) -> Deployed:
    """Static API keys, deployed once for the two tests below; each test's songs are made with
    keys of its own (alice and bob; carol), so neither sees the other's."""
    return module_deploy(
        auth={"api_keys": ["key-alice", "key-bob", "key-carol"]},
        postprocess={"formats": ["m4a", "wav"]},
    )


def test_api_keys_gate_every_call_and_scope_songs_to_their_key(keyed_app: Deployed) -> None:
    app = keyed_app
    client = httpx.Client(base_url=app.client.base_url, timeout=60)
    body = {"style": "lofi", "duration_s": 5, "variations": 1}

    missing = client.post("/v1/songs", json=body)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert missing.json()["error"]["field"] == "Authorization"
    wrong = client.post("/v1/songs", json=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert client.post("/v1/tags/normalize", json={"text": "pop"}).status_code == 401

    alice = {"Authorization": "Bearer key-alice"}
    bob = {"Authorization": "Bearer key-bob"}
    song_id = client.post("/v1/songs", json=body, headers=alice).json()["id"]
    assert client.get(f"/v1/songs/{song_id}", headers=alice).status_code == 200
    # Bob cannot see, list, stream or download Alice's song: to him it does not exist.
    assert client.get(f"/v1/songs/{song_id}", headers=bob).status_code == 404
    assert client.get(f"/v1/songs/{song_id}/events", headers=bob).status_code == 404
    assert client.get("/v1/songs", headers=bob).json()["songs"] == []
    assert [s["id"] for s in client.get("/v1/songs", headers=alice).json()["songs"]] == [song_id]
    client.headers.update(alice)
    assert wait_for_song(client, song_id)["status"] == "succeeded"
    # Health is for load balancers and needs no key.
    assert app.client.get("/healthz", headers={"Authorization": ""}).status_code == 200
    client.close()


def test_media_links_are_signed_for_players_that_cannot_send_a_key(keyed_app: Deployed) -> None:
    app = keyed_app
    carol = httpx.Client(
        base_url=app.client.base_url, headers={"Authorization": "Bearer key-carol"}, timeout=60
    )
    player = httpx.Client(base_url=app.client.base_url, timeout=60)  # an <audio> element
    body = {"style": "lofi", "duration_s": 9, "variations": 1}
    song_id = carol.post("/v1/songs", json=body).json()["id"]
    (variation,) = wait_for_song(carol, song_id)["variations"]

    wav_url = variation["audio"]["wav"]
    path, _, query = wav_url.partition("?")
    assert {"exp", "sig"} == {part.split("=")[0] for part in query.split("&")}  # names no owner
    fetched = player.get(wav_url)
    assert fetched.status_code == 200 and fetched.content[:4] == b"RIFF"
    assert player.get(path).status_code == 401  # the bare path still needs the key
    assert player.get(wav_url.replace("sig=", "sig=0")).status_code == 403
    moved = player.get(wav_url.replace("audio.wav", "audio.m4a"))  # a link is for its own file
    assert moved.status_code == 403 and moved.json()["error"]["field"] == "sig"
    assert player.get(variation["peaks"]).status_code == 200

    # HLS: a native player fetches the playlist, then the segment URIs written into it.
    playlist = player.get(variation["hls"])
    assert playlist.status_code == 200, playlist.text
    segments = [line for line in playlist.text.splitlines() if line and line[0] != "#"]
    assert segments and all("sig=" in segment for segment in segments)
    base = variation["hls"].split("?")[0].rsplit("/", 1)[0]
    for segment in segments:
        assert player.get(f"{base}/{segment}").status_code == 200
    assert player.get(f"{base}/{segments[0].split('?')[0]}").status_code == 401

    # Stems links are signed the same way.
    stems_url = f"/v1/songs/{song_id}/variations/0/stems"
    assert carol.post(stems_url).status_code == 202
    deadline = time.monotonic() + 120
    while (stems := carol.get(stems_url).json())["status"] != "succeeded":
        assert stems["status"] in ("queued", "running") and time.monotonic() < deadline, stems
        time.sleep(0.2)
    assert player.get(stems["stems"][0]["audio"]["wav"]).status_code == 200
    carol.close()
    player.close()


def test_a_full_queue_answers_429_with_retry_after(deploy: DeployFn) -> None:
    app = deploy(jobs={"max_queued_jobs": 1, "max_concurrent_jobs": 1})
    body = {"style": "ambient", "instrumental": True, "duration_s": 90, "variations": 1}
    first = app.client.post("/v1/songs", json=body)  # claimed at once: running
    assert first.status_code == 202
    wait_running = wait_for_status(app, first.json()["id"], "running")
    assert wait_running
    second = app.client.post("/v1/songs", json=body)  # waits: the only conductor slot is busy
    third = app.client.post("/v1/songs", json=body)
    assert second.status_code == 202
    assert third.status_code == 429
    assert third.headers["retry-after"] == "5"
    assert third.json()["error"]["code"] == "too_many_queued"
    for response in (first, second):
        assert wait_for_song(app.client, response.json()["id"])["status"] == "succeeded"


def wait_for_status(app: Deployed, song_id: str, status: str, timeout_s: float = 30) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if app.client.get(f"/v1/songs/{song_id}").json()["status"] == status:
            return True
        time.sleep(0.02)
    return False


def test_a_keys_quota_holds_across_two_api_replicas(deploy: DeployFn) -> None:
    """A managed key added to the job store of a running app works on both ingress replicas
    within seconds, and its daily song quota holds across them (admission is decided in the
    job store, not in a replica)."""
    from serve.http.auth import KEY_CACHE_S
    from serve.store.tenancy import ApiKeyRecord, hash_api_key, new_api_key, new_owner_id

    app = deploy(auth={"quotas": {"songs_per_day": 3}}, deployments={"api": {"num_replicas": 2}})
    key = new_api_key()
    record = ApiKeyRecord("two-replicas", new_owner_id(), hash_api_key(key), key[:8], time.time())
    app._read(lambda store: store.add_api_key(record))
    time.sleep(KEY_CACHE_S + 0.5)
    headers = {"Authorization": f"Bearer {key}"}
    body = {"style": "ambient", "instrumental": True, "duration_s": 5, "variations": 1}
    answers = [app.client.post("/v1/songs", json=body, headers=headers) for _ in range(6)]
    assert [a.status_code for a in answers] == [202, 202, 202, 429, 429, 429]
    refused = answers[-1]
    assert refused.json()["error"]["code"] == "songs_per_day"
    assert refused.headers["ratelimit-limit"] == "3" and int(refused.headers["retry-after"]) > 0
    usage = app.client.get("/v1/usage", headers=headers).json()
    assert usage["key"] == "two-replicas" and usage["songs_today"]["used"] == 3
    with httpx.Client(base_url=app.client.base_url, headers=headers, timeout=60) as keyed:
        for answer in answers[:3]:
            assert wait_for_song(keyed, answer.json()["id"])["status"] == "succeeded"
