"""Stems through the API: POST starts a durable stems job, its progress comes on the song's event
stream (which stays open for it after `done`), GET lists the stems, and every stem file is
signed like a song.

Sketch songs get their exact stems (rendered again, mastered with the song's own gain curve), so
the stems decoded from their wav files add up to the song's wav. Songs of other models are split
by htdemucs: here the tiny ACE-Step checkpoint makes the song and a tiny random-weight htdemucs,
in Demucs' own checkpoint format, separates it through the real loader.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from pipeline.stems import STEM_NAMES
from tests.helpers import QUICK_RESTART, read_events, wait_for_song

from .conftest import Deployed, kill_replicas

pytestmark = pytest.mark.integration

DeployFn = Callable[..., Deployed]


def _decode(client: httpx.Client, url: str) -> np.ndarray:
    from pipeline.encode import decode_audio

    response = client.get(url)
    assert response.status_code == 200, response.text
    audio, sample_rate = decode_audio(response.content)
    assert sample_rate == 48_000
    return audio


def _song(client: httpx.Client, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    song_id = client.post("/v1/songs", json=body).json()["id"]
    song = wait_for_song(client, song_id)
    assert song["status"] == "succeeded", song
    return song_id, song["variations"][0]


def _wait_for_stems(client: httpx.Client, url: str, timeout_s: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        stems = client.get(url).json()
        if stems["status"] in ("succeeded", "failed"):
            return stems
        time.sleep(0.2)
    raise AssertionError(f"stems at {url} did not finish in {timeout_s} s")


@pytest.fixture(scope="module")
def sketch_app(module_deploy: DeployFn) -> Deployed:
    """Sketch pools with wav and mp3 made eagerly, deployed once for the tests that need nothing
    else (they come before the module's `deploy` tests, whose deploys replace it)."""
    return module_deploy(postprocess={"formats": ["wav", "mp3"]})


def test_sketch_stems_add_up_to_the_song(sketch_app: Deployed) -> None:
    client = sketch_app.client
    song_id, variation = _song(
        client, {"style": "funky disco", "lyrics": "[verse]\nDance all night\nunder the light",
                 "duration_s": 8, "variations": 1, "seed": 11},
    )  # fmt: skip
    stems_url = f"/v1/songs/{song_id}/variations/0/stems"
    missing = client.get(stems_url)
    assert missing.status_code == 404 and "POST" in missing.json()["error"]["message"]

    accepted = client.post(stems_url)
    assert accepted.status_code == 202, accepted.text
    assert accepted.headers["location"] == stems_url
    assert accepted.json()["status"] in ("queued", "running")
    # The song is done, but its stream stays open until the stems are made.
    events = read_events(client, song_id)
    kinds = [kind for _, kind, _ in events]
    assert kinds.index("done") < kinds.index("stems")
    assert "stems_progress" in kinds
    stages = {data["stage"] for _, kind, data in events if kind == "stems_progress"}
    assert stages == {"rendering", "delivering"}
    progress = [data["progress"] for _, kind, data in events if kind == "stems_progress"]
    assert progress == sorted(progress) and progress[0] >= 0 and progress[-1] < 1
    finished = [data for _, kind, data in events if kind == "stems"][-1]
    assert finished["status"] == "succeeded" and finished["method"] == "exact"
    assert [stem["name"] for stem in finished["stems"]] == list(STEM_NAMES)

    stems = client.get(stems_url).json()
    assert stems["status"] == "succeeded" and stems["progress"] == 1.0, stems
    assert [stem["name"] for stem in stems["stems"]] == list(STEM_NAMES)
    assert stems["provenance"]["watermark"] == "not configured"
    assert stems["stems"][0]["audio"]["wav"] == finished["stems"][0]["audio"]["wav"]

    mix = _decode(client, variation["audio"]["wav"])
    parts = {stem["name"]: _decode(client, stem["audio"]["wav"]) for stem in stems["stems"]}
    for name, part in parts.items():
        assert part.shape == mix.shape, name
        assert float(np.sqrt(np.mean(part**2))) > 1e-3, f"{name} is silent"
    total = sum(parts.values())
    # 16-bit wav files: each of the five files is within half a step of its float value.
    assert float(np.max(np.abs(total - mix))) <= 3.5 / 32768

    # Every stem file is signed and names the stem, the model and the seed.
    mp3 = client.get(stems["stems"][3]["audio"]["mp3"]).content
    report = client.post("/v1/verify", files={"file": ("vocals.mp3", mp3)}).json()
    assert report["c2pa"]["valid"] is True, report
    generation = report["c2pa"]["manifest"]["generation"]
    assert generation["stem"] == "vocals" and generation["stem_method"] == "exact"
    assert generation["model_id"] == "sketch" and generation["seed"] == 11

    ranged = client.get(stems["stems"][0]["audio"]["wav"], headers={"Range": "bytes=0-99"})
    assert ranged.status_code == 206 and len(ranged.content) == 100

    again = client.post(stems_url)  # already made: nothing is queued again
    assert again.status_code == 200 and again.json()["status"] == "succeeded"
    # A late subscriber gets the whole story, then the stream closes.
    replayed = read_events(client, song_id, timeout_s=10)
    assert [kind for _, kind, _ in replayed] == kinds


def test_stems_requests_are_checked(sketch_app: Deployed) -> None:
    client = sketch_app.client
    song_id, _ = _song(client, {"style": "ambient", "duration_s": 5, "variations": 1})
    out_of_range = client.post(f"/v1/songs/{song_id}/variations/3/stems")
    assert out_of_range.status_code == 404
    assert out_of_range.json()["error"]["field"] == "index"
    assert client.post("/v1/songs/song_unknown/variations/0/stems").status_code == 404
    not_made = client.get(f"/v1/songs/{song_id}/variations/0/stems/drums.wav")
    assert not_made.status_code == 404
    # A variation still rendering has no stems to make yet: 409, saying what to wait for.
    long_song = client.post(
        "/v1/songs", json={"style": "ambient", "duration_s": 120, "variations": 1}
    ).json()["id"]
    early = client.post(f"/v1/songs/{long_song}/variations/0/stems")
    assert early.status_code == 409, early.text
    error = early.json()["error"]
    assert error["code"] == "not_ready" and "`variation` event" in error["message"]
    assert client.get(f"/v1/songs/{long_song}/variations/0/stems").status_code == 404


def test_a_stems_job_survives_its_conductor_dying(deploy: DeployFn) -> None:
    app = deploy(postprocess={"formats": ["wav"]}, deployments={"conductor": QUICK_RESTART})
    client = app.client
    song_id, _ = _song(
        client,
        {"style": "synthwave", "instrumental": True, "duration_s": 90, "variations": 1, "seed": 4},
    )
    stems_url = f"/v1/songs/{song_id}/variations/0/stems"
    assert client.post(stems_url).status_code == 202
    deadline = time.monotonic() + 60
    while True:  # kill it while the stems are being made
        stems = client.get(stems_url).json()
        if stems["status"] == "running" and stems["progress"] > 0:
            break
        assert stems["status"] in ("queued", "running"), stems
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert kill_replicas("Conductor") == 1  # Serve replaces it; the stems job must go on

    stems = _wait_for_stems(client, stems_url, timeout_s=180)
    assert stems["status"] == "succeeded", stems
    assert app.stems(song_id, 0).attempts == 2  # taken over once, after its lease expired
    statuses = [d["status"] for _, k, d in read_events(client, song_id) if k == "stems"]
    assert statuses == ["queued", "running", "running", "succeeded"]


@pytest.fixture(scope="module")
def tiny_models(
    tmp_path_factory: pytest.TempPathFactory, tiny_acestep_checkpoint: Path
) -> tuple[Path, Path]:
    pytest.importorskip("diffusers")
    pytest.importorskip("demucs")
    from pipeline.tiny.htdemucs import build_tiny_htdemucs

    root = tmp_path_factory.mktemp("tiny-models")
    return tiny_acestep_checkpoint, build_tiny_htdemucs(root / "htdemucs.th")


def _tiny_acestep_pool(checkpoint: Path) -> dict[str, Any]:
    """A one-replica CPU pool of the tiny ACE-Step checkpoint, two denoising steps a song."""
    return {
        "name": "DiT_CPU",
        "model": "ace-step",
        "ace_step": {"path": str(checkpoint), "device": "cpu", "dtype": "float32",
                     "num_inference_steps": 2},
        "deployment": {"num_replicas": 1, "max_ongoing_requests": 4, "actor": {"num_cpus": 0.5}},
    }  # fmt: skip


def test_demucs_stems_of_an_ace_step_song(deploy: DeployFn, tiny_models: tuple[Path, Path]) -> None:
    acestep, htdemucs = tiny_models
    pool = _tiny_acestep_pool(acestep)
    app = deploy(
        models={"auto_order": ["ace-step"], "pools": [pool]},
        postprocess={
            "formats": ["flac", "m4a"],
            "stems": {"demucs_checkpoint": str(htdemucs), "device": "cpu"},
        },
        deployments={
            "postprocess": {"num_replicas": 1, "max_ongoing_requests": 1,
                            "actor": {"num_cpus": 0.25}},
            "separator": {"num_replicas": 1, "max_ongoing_requests": 1,
                          "actor": {"num_cpus": 0.25}},
        },
    )  # fmt: skip
    client = app.client
    song_id, variation = _song(
        client, {"style": "synthwave", "duration_s": 6, "variations": 1, "seed": 5}
    )
    assert variation["model"] == "ace-step"
    stems_url = f"/v1/songs/{song_id}/variations/0/stems"
    assert client.post(stems_url).status_code == 202
    stems = _wait_for_stems(client, stems_url)
    assert stems["status"] == "succeeded", stems
    assert stems["method"] == "htdemucs"
    assert [stem["name"] for stem in stems["stems"]] == list(STEM_NAMES)
    stages = {d["stage"] for _, k, d in read_events(client, song_id) if k == "stems_progress"}
    assert stages == {"separating", "delivering"}

    # Separated from the lossless flac: the flac stems add up to it.
    mix = _decode(client, variation["audio"]["flac"])
    parts = [_decode(client, stem["audio"]["flac"]) for stem in stems["stems"]]
    assert all(part.shape == mix.shape for part in parts)
    assert float(np.max(np.abs(sum(parts) - mix))) <= 3.5 / 32768

    m4a = client.get(stems["stems"][0]["audio"]["m4a"]).content
    report = client.post("/v1/verify", files={"file": ("drums.m4a", m4a)}).json()
    assert report["c2pa"]["valid"] is True, report
    generation = report["c2pa"]["manifest"]["generation"]
    assert generation["stem"] == "drums" and generation["stem_method"] == "htdemucs"
    assert generation["model_id"] == "ace-step" and generation["seed"] == 5


def test_stems_need_a_separator_for_other_models(
    deploy: DeployFn, tiny_models: tuple[Path, Path]
) -> None:
    acestep, _ = tiny_models
    pool = _tiny_acestep_pool(acestep)
    app = deploy(models={"auto_order": ["ace-step"], "pools": [pool]})
    song_id, _ = _song(app.client, {"style": "rock", "duration_s": 5, "variations": 1})
    refused = app.client.post(f"/v1/songs/{song_id}/variations/0/stems")
    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert error["code"] == "stems_unavailable"
    assert "postprocess.stems.demucs_checkpoint" in error["message"]
