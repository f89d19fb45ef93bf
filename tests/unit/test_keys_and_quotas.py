"""Keys managed with the CLI and per-owner quotas, through the HTTP API (TestClient, no Ray): a key
made by `songserve keys create` works at once on every API replica, a revoked one stops, and
quotas refuse with 429, Retry-After and RateLimit-* headers on any replica, as `GET /v1/usage`
reports."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from serve.cli import main as songserve
from serve.config import AppConfig, app_args_from_serve_config, load_serve_config, resolve_config
from serve.http.auth import KEY_CACHE_S
from serve.services import ApiServices
from tests.http_graph import LOOPBACK_CLIENT, REMOTE_CLIENT, api_client

SONG = {"prompt": "a song about tea", "duration_s": 10, "variations": 2}


def _config_file(tmp_path: Path, **args: Any) -> Path:
    path = tmp_path / "serve.yaml"
    app_args = {"storage": {"data_dir": str(tmp_path / "var")}, **args}
    path.write_text(
        yaml.safe_dump(
            {
                "applications": [
                    {"name": "songserve", "import_path": "serve.app:build_app", "args": app_args}
                ]
            }
        )
    )
    return path


def _config(path: Path) -> AppConfig:
    return resolve_config(app_args_from_serve_config(load_serve_config(path)))


def _keys(capsys: pytest.CaptureFixture[str], *argv: str) -> list[str]:
    capsys.readouterr()
    assert songserve(["keys", *argv]) == 0
    return capsys.readouterr().out.strip().splitlines()


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_a_key_made_with_the_cli_works_at_once_and_stops_when_revoked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _config_file(tmp_path)
    loopback, _ = api_client(_config(path), client=LOOPBACK_CLIENT)
    assert loopback.get("/v1/songs").status_code == 200  # no keys yet: loopback is served

    key = _keys(capsys, "create", "--name", "web-app", "--config", str(path))[-1]
    assert key.startswith("ss_")
    # A replica started before the key existed learns of it within KEY_CACHE_S.
    time.sleep(KEY_CACHE_S + 0.1)
    remote, _ = api_client(_config(path), client=REMOTE_CLIENT)
    for client in (remote, loopback):
        assert client.get("/v1/songs", headers=_bearer(key)).status_code == 200
        assert client.get("/v1/songs").status_code == 401  # keys exist: loopback needs one too

    listed = "\n".join(_keys(capsys, "list", "--config", str(path)))
    assert "web-app" in listed and key[:8] in listed and key not in listed

    other = _keys(capsys, "create", "--name", "cli", "--config", str(path))[-1]
    _keys(capsys, "revoke", "web-app", "--config", str(path))
    time.sleep(KEY_CACHE_S + 0.1)
    for client in (remote, loopback):
        assert client.get("/v1/songs", headers=_bearer(key)).status_code == 401
        assert client.get("/v1/songs", headers=_bearer(other)).status_code == 200
    assert "revoked" in "\n".join(_keys(capsys, "list", "--config", str(path)))


def test_the_cli_names_what_is_wrong(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _config_file(tmp_path)
    _keys(capsys, "create", "--name", "web", "--config", str(path))
    assert songserve(["keys", "create", "--name", "web", "--config", str(path)]) == 1
    assert "revoke it first" in capsys.readouterr().err
    assert songserve(["keys", "revoke", "nobody", "--config", str(path)]) == 1
    assert "no active key named 'nobody'" in capsys.readouterr().err
    assert songserve(["keys", "list", "--config", str(tmp_path / "missing.yaml")]) == 1
    assert "pass --config" in capsys.readouterr().err


def test_a_songs_per_day_quota_holds_across_two_api_replicas(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _config_file(tmp_path, auth={"quotas": {"songs_per_day": 3}})
    key = _keys(capsys, "create", "--name", "app", "--config", str(path))[-1]
    replicas = [api_client(_config(path), client=REMOTE_CLIENT)[0] for _ in range(2)]
    answers = [replicas[i % 2].post("/v1/songs", json=SONG, headers=_bearer(key)) for i in range(5)]
    assert [a.status_code for a in answers] == [202, 202, 202, 429, 429]
    refused = answers[-1]
    assert refused.json()["error"]["code"] == "songs_per_day"
    reset = int(refused.headers["Retry-After"])
    assert 0 < reset <= 86400 and refused.headers["RateLimit-Reset"] == str(reset)
    assert (refused.headers["RateLimit-Limit"], refused.headers["RateLimit-Remaining"]) == (
        "3",
        "0",
    )

    usage = replicas[1].get("/v1/usage", headers=_bearer(key)).json()
    assert usage["key"] == "app"
    assert usage["songs_today"] == {"used": 3, "limit": 3}
    assert usage["audio_seconds_today"] == {"used": 60.0, "limit": None}
    assert usage["concurrent_jobs"]["used"] == 3  # queued: no conductor runs here


def test_a_key_carries_its_own_quotas(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _config_file(tmp_path, auth={"quotas": {"concurrent_jobs": 10}})
    small = _keys(
        capsys, "create", "--name", "small", "--concurrent-jobs", "1", "--config", str(path)
    )[-1]
    big = _keys(capsys, "create", "--name", "big", "--config", str(path))[-1]
    client, _ = api_client(_config(path), client=REMOTE_CLIENT)
    assert client.post("/v1/songs", json=SONG, headers=_bearer(small)).status_code == 202
    refused = client.post("/v1/songs", json=SONG, headers=_bearer(small))
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "concurrent_jobs"
    assert int(refused.headers["Retry-After"]) >= 1
    # Another key's songs are its own: neither its quota nor its songs are shared.
    assert client.post("/v1/songs", json=SONG, headers=_bearer(big)).status_code == 202
    assert len(client.get("/v1/songs", headers=_bearer(big)).json()["songs"]) == 1
    usage = client.get("/v1/usage", headers=_bearer(big)).json()
    assert usage["concurrent_jobs"] == {"used": 1, "limit": 10}


def test_an_audio_seconds_quota_refuses_the_song_that_would_pass_it(tmp_path: Path) -> None:
    client, _ = api_client(
        resolve_config(
            {
                "storage": {"data_dir": str(tmp_path)},
                "auth": {"quotas": {"audio_seconds_per_day": 50}},
            }
        )
    )
    assert client.post("/v1/songs", json=SONG).status_code == 202  # 20 s of audio
    too_long = client.post("/v1/songs", json={**SONG, "duration_s": 20})  # 40 s more
    assert too_long.status_code == 429
    assert too_long.json()["error"]["code"] == "audio_seconds_per_day"
    assert client.post("/v1/songs", json=SONG).status_code == 202  # 20 s still fit


def test_with_managed_keys_only_media_links_are_signed_with_a_shared_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _config_file(tmp_path)
    key = _keys(capsys, "create", "--name", "player", "--config", str(path))[-1]
    one, services_one = api_client(_config(path), client=REMOTE_CLIENT)
    two, _ = api_client(_config(path), client=REMOTE_CLIENT)
    song_id = one.post("/v1/songs", json=SONG, headers=_bearer(key)).json()["id"]
    owner = _owner_of(services_one, song_id)
    path_ = f"/v1/songs/{song_id}/variations/0/peaks"
    link = services_one.views.media_url(path_, owner)
    assert "sig=" in link
    # The other replica accepts it (same secret from the store); the variation is not made.
    answer = two.get(link)
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_ready"


def _owner_of(services: ApiServices, song_id: str) -> str:
    import asyncio

    job = asyncio.run(services.jobs.get_job(song_id))
    assert job is not None
    return job.owner


def test_admission_is_refused_with_the_queue_reason(tmp_path: Path) -> None:
    config = resolve_config(
        {"storage": {"data_dir": str(tmp_path)}, "jobs": {"max_queued_jobs": 2}}
    )
    client: TestClient = api_client(config)[0]
    codes = [client.post("/v1/songs", json=SONG).status_code for _ in range(3)]
    assert codes == [202, 202, 429]
