"""LoRAs are scoped per owner, through the HTTP API (TestClient, no Ray) with keys made by
`songserve keys create`: a tenant never sees, replaces or deletes another's LoRAs, and names only
its own or the operator's (shared, read-only) in songs; LoRAs stored before scopes (`loras/<id>/`)
still list, resolve and load as shared ones. Uploads are real LoRA files of the tiny ACE-Step
checkpoint, validated against it."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from deployments.song_stages import render_request_of
from pipeline.tags import StyleTags
from pipeline.tiny.acestep import LORA_FILE
from serve.cli import main as songserve
from serve.config import AppConfig, app_args_from_serve_config, load_serve_config, resolve_config
from serve.loras import LoraCache, LoraRef
from serve.services import ApiServices
from serve.store import JobRecord
from tests.http_graph import REMOTE_CLIENT, api_client

TAGS = StyleTags(genre="pop", subgenre=None, family="pop")
SONG = {"style": "dream pop", "duration_s": 10, "variations": 1, "model": "ace-step"}


@pytest.fixture(scope="module")
def checkpoint(tiny_acestep_checkpoint: Path) -> Path:
    return tiny_acestep_checkpoint


@pytest.fixture(scope="module")
def weights(checkpoint: Path) -> dict[str, bytes]:
    """Two valid LoRA files, told apart by their SHA-256."""
    found = {
        name: (checkpoint / "loras" / f"tiny-{name}" / LORA_FILE).read_bytes() for name in "ab"
    }
    assert found["a"] != found["b"]
    return found


class Tenants:
    """The API as seen by two tenants, each with a key of its own (`alice`, `bob`)."""

    def __init__(self, client: TestClient, services: ApiServices, keys: dict[str, str]) -> None:
        self.client, self.services, self._keys = client, services, keys

    def call(self, who: str, method: str, path: str, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self._keys[who]}"}
        return self.client.request(method, path, headers=headers, **kwargs)

    def upload(self, who: str, lora_id: str, data: bytes, *, replace: bool = False) -> Any:
        form = {"id": lora_id, **({"replace": "true"} if replace else {})}
        files = {"file": ("pytorch_lora_weights.safetensors", data)}
        return self.call(who, "POST", "/v1/loras", data=form, files=files)

    def listed(self, who: str) -> dict[str, dict[str, Any]]:
        answer = self.call(who, "GET", "/v1/loras")
        assert answer.status_code == 200, answer.text
        return {lora["id"]: lora for lora in answer.json()["loras"]}

    def song(self, who: str, lora_id: str) -> Any:
        return self.call(who, "POST", "/v1/songs", json={**SONG, "lora": {"id": lora_id}})

    def job(self, song_id: str) -> JobRecord:
        job = asyncio.run(self.services.jobs.get_job(song_id))
        assert job is not None
        return job


def _tenants(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], checkpoint: Path, **args: Any
) -> Tenants:
    app_args = {
        "storage": {"data_dir": str(tmp_path / "var")},
        "models": {
            "pools": [
                {
                    "name": "DiT",
                    "model": "ace-step",
                    "ace_step": {"path": str(checkpoint), "device": "cpu", "dtype": "float32"},
                }
            ]
        },
        **args,
    }
    path = tmp_path / "serve.yaml"
    application = {"name": "songserve", "import_path": "serve.app:build_app", "args": app_args}
    path.write_text(yaml.safe_dump({"applications": [application]}))
    keys = {}
    for name in ("alice", "bob"):
        capsys.readouterr()
        assert songserve(["keys", "create", "--name", name, "--config", str(path)]) == 0
        keys[name] = capsys.readouterr().out.strip().splitlines()[-1]
    config: AppConfig = resolve_config(app_args_from_serve_config(load_serve_config(path)))
    client, services = api_client(config, client=REMOTE_CLIENT)
    return Tenants(client, services, keys)


def _error(answer: Any) -> dict[str, Any]:
    error: dict[str, Any] = answer.json()["error"]
    return error


def test_a_tenant_never_sees_replaces_or_deletes_anothers_lora(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    checkpoint: Path,
    weights: dict[str, bytes],
) -> None:
    api = _tenants(tmp_path, capsys, checkpoint)
    uploaded = api.upload("alice", "style", weights["a"])
    assert uploaded.status_code == 201, uploaded.text
    assert uploaded.json()["scope"] == "own" and uploaded.json()["read_only"] is False
    assert api.upload("alice", "secret-style", weights["a"]).status_code == 201
    alice_sha = hashlib.sha256(weights["a"]).hexdigest()

    # Bob sees none of them.
    assert api.listed("bob") == {}
    # Bob's upload of the same id is Bob's own LoRA: Alice's is untouched, even by a replace.
    assert api.upload("bob", "style", weights["b"]).status_code == 201
    assert api.upload("bob", "style", weights["b"], replace=True).status_code == 201
    assert api.listed("alice")["style"]["sha256"] == alice_sha
    assert api.listed("bob")["style"]["sha256"] == hashlib.sha256(weights["b"]).hexdigest()
    assert set(api.listed("bob")) == {"style"}

    # Deleting Alice's LoRA is the 404 of an id that never was: its existence is not revealed.
    foreign = api.call("bob", "DELETE", "/v1/loras/secret-style")
    unknown = api.call("bob", "DELETE", "/v1/loras/never-was")
    assert foreign.status_code == unknown.status_code == 404
    assert _error(foreign)["code"] == _error(unknown)["code"] == "not_found"
    assert "secret-style" in api.listed("alice")

    # Naming it in a song is an unknown LoRA, and the answer lists only what Bob may use.
    refused = api.song("bob", "secret-style")
    assert refused.status_code == 422, refused.text
    assert _error(refused)["field"] == "lora.id"
    assert "'secret-style'; yours and shared: style " in _error(refused)["message"]

    # Bob deleting his own leaves Alice's of the same id.
    assert api.call("bob", "DELETE", "/v1/loras/style").status_code == 204
    assert api.listed("bob") == {}
    assert api.listed("alice")["style"]["sha256"] == alice_sha


def test_a_song_resolves_the_callers_own_lora_and_keeps_its_ref(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    checkpoint: Path,
    weights: dict[str, bytes],
) -> None:
    api = _tenants(tmp_path, capsys, checkpoint)
    assert api.upload("alice", "style", weights["a"]).status_code == 201
    accepted = api.song("alice", "style")
    assert accepted.status_code == 202, accepted.text
    job = api.job(accepted.json()["id"])
    ref = str(LoraRef.owned(job.owner, "style"))
    assert job.request["lora"]["ref"] == ref
    # The ref names the owner: the song shows the id only.
    song = api.call("alice", "GET", f"/v1/songs/{job.id}").json()
    assert song["request"]["lora"] == {"id": "style", "scale": 1.0}

    # The conductor renders with the ref, which decoders load by.
    render = render_request_of(job, job.variations[0], [], TAGS)
    assert render.lora_id == ref
    cache = LoraCache(api.services.objects, tmp_path / "node-cache")
    assert asyncio.run(cache.path(ref)).read_bytes() == weights["a"]


def test_a_shared_lora_is_listed_read_only_to_every_tenant(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    checkpoint: Path,
    weights: dict[str, bytes],
) -> None:
    preload = [{"id": "house", "path": str(checkpoint / "loras" / "tiny-a" / LORA_FILE)}]
    api = _tenants(tmp_path, capsys, checkpoint, loras={"preload": preload})
    asyncio.run(api.services.loras.preload())  # as the API replica does at start
    for who in ("alice", "bob"):
        house = api.listed(who)["house"]
        assert (house["scope"], house["read_only"]) == ("shared", True)
        refused = api.call(who, "DELETE", "/v1/loras/house")
        assert refused.status_code == 403
        assert (
            _error(refused)["code"] == "read_only" and "loras.preload" in _error(refused)["message"]
        )
        # Its id is taken: a request's `lora.id` never names two LoRAs a caller can use.
        for replace in (False, True):
            taken = api.upload(who, "house", weights["b"], replace=replace)
            assert taken.status_code == 409
            assert (_error(taken)["code"], _error(taken)["field"]) == ("lora_exists", "id")
            assert "operator LoRA" in _error(taken)["message"]
    accepted = api.song("bob", "house")
    assert accepted.status_code == 202, accepted.text
    assert api.job(accepted.json()["id"]).request["lora"]["ref"] == "shared/house"
    assert api.listed("alice")["house"]["sha256"] == hashlib.sha256(weights["a"]).hexdigest()


def test_uploading_an_id_again_is_a_409_unless_it_is_replaced(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    checkpoint: Path,
    weights: dict[str, bytes],
) -> None:
    api = _tenants(tmp_path, capsys, checkpoint)
    assert api.upload("alice", "mine", weights["a"]).status_code == 201
    again = api.upload("alice", "mine", weights["b"])
    assert again.status_code == 409
    assert (_error(again)["code"], _error(again)["field"]) == ("lora_exists", "id")
    assert "replace=true" in _error(again)["message"]
    assert api.listed("alice")["mine"]["sha256"] == hashlib.sha256(weights["a"]).hexdigest()

    replaced = api.upload("alice", "mine", weights["b"], replace=True)
    assert replaced.status_code == 201, replaced.text
    assert replaced.json()["sha256"] == hashlib.sha256(weights["b"]).hexdigest()
    assert api.listed("alice")["mine"]["sha256"] == replaced.json()["sha256"]


def test_an_owner_keeps_at_most_max_per_owner_loras(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    checkpoint: Path,
    weights: dict[str, bytes],
) -> None:
    api = _tenants(tmp_path, capsys, checkpoint, loras={"max_per_owner": 2})
    assert [api.upload("alice", name, weights["a"]).status_code for name in "xy"] == [201, 201]
    full = api.upload("alice", "z", weights["a"])
    assert full.status_code == 409 and _error(full)["code"] == "too_many_loras"
    assert "loras.max_per_owner" in _error(full)["message"]
    assert api.upload("alice", "x", weights["b"], replace=True).status_code == 201
    assert api.upload("bob", "z", weights["a"]).status_code == 201  # a limit per owner
    assert api.call("alice", "DELETE", "/v1/loras/y").status_code == 204
    assert api.upload("alice", "z", weights["a"]).status_code == 201


def test_a_lora_stored_before_scopes_is_a_shared_one(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    checkpoint: Path,
    weights: dict[str, bytes],
) -> None:
    api = _tenants(tmp_path, capsys, checkpoint)
    # As the registry stored every LoRA before scopes: `loras/<id>/`, for all tenants to use.
    meta = {
        "id": "vintage",
        "model": "ace-step",
        "rank": 4,
        "size_bytes": len(weights["b"]),
        "sha256": hashlib.sha256(weights["b"]).hexdigest(),
        "created_at": 1.0,
    }
    objects = api.services.objects
    asyncio.run(objects.put(f"loras/vintage/{LORA_FILE}", weights["b"], "application/x"))
    asyncio.run(objects.put("loras/vintage/meta.json", json.dumps(meta).encode(), "x/json"))

    for who in ("alice", "bob"):
        vintage = api.listed(who)["vintage"]
        assert (vintage["scope"], vintage["read_only"], vintage["sha256"]) == (
            "shared",
            True,
            meta["sha256"],
        )
        assert api.call(who, "DELETE", "/v1/loras/vintage").status_code == 403
        assert api.upload(who, "vintage", weights["a"]).status_code == 409

    accepted = api.song("alice", "vintage")
    assert accepted.status_code == 202, accepted.text
    job = api.job(accepted.json()["id"])
    assert job.request["lora"]["ref"] == "shared/vintage"
    render = render_request_of(job, job.variations[0], [], TAGS)
    cache = LoraCache(objects, tmp_path / "node-cache")
    assert asyncio.run(cache.path(render.lora_id or "")).read_bytes() == weights["b"]
    # Left where it was: nothing moved or rewrote it.
    assert asyncio.run(objects.get("loras/vintage/meta.json")) == json.dumps(meta).encode()
