"""Audio uploads over the real HTTP app (TestClient, real services and stores, no Ray): a file is
judged by its bytes, capped in size and length, stored as 48 kHz stereo float32 in the raw render
format with its C2PA report, private to its owner, listed newest first, deleted on request, and
swept with `jobs.retention_days`."""

from __future__ import annotations

import asyncio
import io
import threading
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from fastapi.testclient import TestClient

from pipeline.audio import raw_render_from_bytes
from pipeline.encode import encode_audio
from pipeline.provenance import SongCredentials, prompt_sha256, sign_audio
from serve.certs import write_dev_chain
from serve.config import AppConfig, C2paConfig, resolve_config
from serve.http.auth import LOCAL_OWNER, key_owner
from serve.http.errors import ApiError
from serve.services import ApiServices
from serve.store import UPLOADS_ROOT, upload_key
from serve.store.tenancy import hash_api_key
from serve.workflow.retention import DAY_S, sweep_expired_uploads
from tests.http_graph import REMOTE_CLIENT, api_client

RATE = 44_100


def _config(tmp_path: Path, **sections: Any) -> AppConfig:
    return resolve_config({"storage": {"data_dir": str(tmp_path)}, **sections})


@pytest.fixture
def local(tmp_path: Path) -> tuple[TestClient, ApiServices]:
    """The embedded default: no keys, called from loopback (owner `local`)."""
    return api_client(_config(tmp_path))


def _tone(duration_s: float, rate: int = RATE) -> np.ndarray:
    """Mono `[1, n]`: a chord with a little noise."""
    t = np.arange(round(duration_s * rate)) / rate
    chord = sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.18, 329.63))
    noise = np.random.default_rng(0).standard_normal(t.size)
    return (0.15 * chord + 0.02 * noise).astype(np.float32)[None, :]


def _file(fmt: str, duration_s: float = 2.0) -> bytes:
    return encode_audio(_tone(duration_s), RATE, fmt)


def _opus(duration_s: float) -> bytes:
    """Opus in Ogg, 48 kHz mono (a format uploads read that songserve never delivers)."""
    buffer = io.BytesIO()
    audio = _tone(duration_s, 48_000)
    with av.open(buffer, "w", format="ogg") as out:
        stream = out.add_stream("opus", rate=48_000, layout="mono")
        for start in range(0, audio.shape[1], 960):
            chunk = np.zeros((1, 960), np.float32)
            part = audio[:, start : start + 960]
            chunk[:, : part.shape[1]] = part
            frame = av.AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
            frame.sample_rate, frame.pts = 48_000, start
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buffer.getvalue()


def _upload(
    client: TestClient,
    data: bytes,
    name: str = "take.wav",
    content_type: str = "application/octet-stream",
    headers: dict[str, str] | None = None,
) -> Any:
    return client.post(
        "/v1/uploads", files={"file": (name, data, content_type)}, headers=headers or {}
    )


def _stored_audio(services: ApiServices, owner: str, upload_id: str) -> np.ndarray:
    source = asyncio.run(services.uploads.source(owner, upload_id, "source.upload"))
    return raw_render_from_bytes(asyncio.run(services.objects.get(source.key)))


# -- what is stored --------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["wav", "mp3", "flac", "m4a"])
def test_an_upload_is_stored_as_48k_stereo_float32(
    local: tuple[TestClient, ApiServices], fmt: str
) -> None:
    client, services = local
    sent = _file(fmt)
    answer = _upload(client, sent, name=f"take.{fmt}")
    assert answer.status_code == 201, answer.text
    upload = answer.json()
    assert upload["id"].startswith("upl_") and upload["format"] == fmt
    assert upload["sample_rate"] == 48_000 and upload["channels"] == 2
    assert upload["original_sample_rate"] == RATE and upload["original_channels"] == 1
    assert upload["filename"] == f"take.{fmt}" and upload["c2pa"] is None
    assert upload["expires_at"] is None  # no jobs.retention_days
    assert upload["duration_s"] == pytest.approx(2.0, abs=0.03)

    audio = _stored_audio(services, LOCAL_OWNER, upload["id"])
    assert audio.dtype == np.float32 and audio.shape[0] == 2
    assert audio.shape[1] == round(upload["duration_s"] * 48_000)
    expected = 96_000  # 2 s at 48 kHz
    assert abs(audio.shape[1] - expected) <= (0 if fmt in ("wav", "flac") else 1152)
    assert np.array_equal(audio[0], audio[1])  # mono made stereo
    assert client.get(f"/v1/uploads/{upload['id']}").json() == upload
    # The file itself is kept as sent (for edits to name as their C2PA ingredient).
    source = asyncio.run(services.uploads.source(LOCAL_OWNER, upload["id"], "source.upload"))
    assert source.format == fmt and source.original_key.endswith(f"/original.{fmt}")
    assert asyncio.run(services.objects.get(source.original_key)) == sent


def test_opus_in_ogg_is_read_too(local: tuple[TestClient, ApiServices]) -> None:
    client, services = local
    upload = _upload(client, _opus(1.0), name="voice-memo.bin").json()
    assert upload["format"] == "opus" and upload["original_sample_rate"] == 48_000
    assert upload["duration_s"] == pytest.approx(1.0, abs=0.03)
    assert _stored_audio(services, LOCAL_OWNER, upload["id"]).shape[0] == 2


def test_the_format_comes_from_the_bytes_not_the_name_or_type(
    local: tuple[TestClient, ApiServices],
) -> None:
    client, _ = local
    flac = _upload(client, _file("flac"), name="song.mp3", content_type="audio/mpeg")
    assert flac.status_code == 201 and flac.json()["format"] == "flac"
    wav = _upload(client, _file("wav"), name="notes.txt", content_type="text/plain")
    assert wav.status_code == 201 and wav.json()["format"] == "wav"
    # A path in the name is not kept.
    for name in ("C:\\Users\\me\\demo.wav", "../../etc/demo.wav"):
        assert _upload(client, _file("wav"), name=name).json()["filename"] == "demo.wav"


def test_what_is_not_accepted_audio_is_refused_naming_the_file(
    local: tuple[TestClient, ApiServices],
) -> None:
    client, services = local
    text = _upload(client, b"just some notes, not a song\n" * 20, name="song.wav")
    assert text.status_code == 415
    error = text.json()["error"]
    assert error["field"] == "file" and error["code"] == "unsupported_media_type"
    assert "wav, mp3, flac, m4a, aac, ogg, opus" in error["message"]

    # Looks like an MP3 frame, holds no audio: a 422, not a 500.
    fake = _upload(client, b"\xff\xfb\x90\x00" + bytes(range(256)) * 8)
    assert fake.status_code == 422 and fake.json()["error"]["field"] == "file"
    empty = _upload(client, b"")
    assert empty.status_code == 422 and empty.json()["error"]["field"] == "file"
    assert asyncio.run(services.objects.list_keys(UPLOADS_ROOT)) == []  # nothing was stored


def test_formats_can_be_narrowed(tmp_path: Path) -> None:
    client, _ = api_client(_config(tmp_path, uploads={"formats": ["wav", "flac"]}))
    refused = _upload(client, _file("mp3"))
    assert refused.status_code == 415 and "(wav, flac;" in refused.json()["error"]["message"]
    assert _upload(client, _file("flac")).status_code == 201


def test_a_file_over_max_bytes_is_a_413_naming_the_setting(tmp_path: Path) -> None:
    client, services = api_client(_config(tmp_path, uploads={"max_bytes": 64 * 1024}))
    big = _upload(client, _file("wav", 2.0))  # ~260 KB
    assert big.status_code == 413
    error = big.json()["error"]
    assert error["code"] == "request_too_large" and "uploads.max_bytes" in error["message"]
    assert _upload(client, _file("wav", 0.3)).status_code == 201

    # The service's own check (a body under the cap but a file over it, as sent in-process).
    with pytest.raises(ApiError) as caught:
        asyncio.run(services.uploads.create(LOCAL_OWNER, b"\0" * (64 * 1024 + 1), "x.wav"))
    assert caught.value.status == 413 and "uploads.max_bytes" in caught.value.message


def test_a_file_longer_than_max_duration_is_a_422_naming_the_setting(tmp_path: Path) -> None:
    client, _ = api_client(_config(tmp_path, uploads={"max_duration_s": 1.0}))
    for fmt in ("wav", "mp3"):
        long = _upload(client, _file(fmt, 3.0))
        assert long.status_code == 422, long.text
        error = long.json()["error"]
        assert error["field"] == "file" and "uploads.max_duration_s" in error["message"]
    exact = _upload(client, _file("wav", 1.0))  # exactly the limit is allowed
    assert exact.status_code == 201 and exact.json()["duration_s"] == pytest.approx(1.0)


def test_decoding_does_not_block_the_event_loop(
    local: tuple[TestClient, ApiServices], monkeypatch: pytest.MonkeyPatch
) -> None:
    import serve.services.uploads as uploads_module

    _, services = local
    real_decode = uploads_module._decode
    loop_threads: list[int] = []

    def slow_decode(*args: Any) -> Any:
        loop_threads.append(threading.get_ident())
        time.sleep(0.3)
        return real_decode(*args)

    monkeypatch.setattr(uploads_module, "_decode", slow_decode)

    async def scenario() -> int:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        await services.uploads.create(LOCAL_OWNER, _file("wav", 0.5), "x.wav")
        ticker.cancel()
        assert loop_threads and loop_threads[0] != threading.get_ident()
        return ticks

    assert asyncio.run(scenario()) >= 10


# -- content credentials ---------------------------------------------------------------------------


def test_a_c2pa_manifest_is_read_and_kept(
    local: tuple[TestClient, ApiServices], tmp_path: Path
) -> None:
    client, services = local
    signer = C2paConfig(
        cert_path=str(tmp_path / "certs" / "chain.pem"),
        key_path=str(tmp_path / "certs" / "signer.key"),
        algorithm="es256",
    )
    write_dev_chain(signer.cert_path, signer.key_path, algorithm="es256")
    credentials = SongCredentials(
        title="Sailing Home",
        model_id="sketch",
        model_version="2025.06",
        seed=7,
        prompt_sha256=prompt_sha256("a song about sailing home"),
        created="2025-06-01T12:00:00+00:00",
        loudness_lufs=-14.0,
        songserve_version="0.1.0",
    )
    for fmt in ("wav", "flac"):
        signed = sign_audio(_file(fmt, 1.0), fmt, credentials, signer)  # type: ignore[arg-type]
        upload = _upload(client, signed, name=f"signed.{fmt}").json()
        assert upload["format"] == fmt  # a signed FLAC starts with an ID3 tag
        c2pa = upload["c2pa"]
        assert c2pa["present"] and c2pa["valid"] and not c2pa["trusted"], c2pa
        assert c2pa["manifest"]["title"] == "Sailing Home"
        assert c2pa["manifest"]["claim_generator"][0]["name"] == "songserve"
        source = asyncio.run(services.uploads.source(LOCAL_OWNER, upload["id"], "source.upload"))
        assert source.c2pa is not None and source.c2pa["valid"]
        kept = asyncio.run(services.objects.get(source.original_key))
        assert kept == signed  # the manifest travels on with the file
        assert source.c2pa["manifest"]["generation"]["seed"] == 7


# -- owners ----------------------------------------------------------------------------------------


def test_an_upload_is_its_owners_alone(tmp_path: Path) -> None:
    client, services = api_client(
        _config(tmp_path, auth={"api_keys": ["alice-key", "bob-key"]}), client=REMOTE_CLIENT
    )
    alice = {"Authorization": "Bearer alice-key"}
    bob = {"Authorization": "Bearer bob-key"}
    assert _upload(client, _file("wav")).status_code == 401  # no key: refused unread
    upload = _upload(client, _file("wav"), headers=alice).json()
    path = f"/v1/uploads/{upload['id']}"

    assert client.get(path, headers=bob).status_code == 404
    assert client.delete(path, headers=bob).status_code == 404
    assert client.get("/v1/uploads", headers=bob).json()["uploads"] == []
    bob_owner = key_owner(hash_api_key("bob-key"))
    alice_owner = key_owner(hash_api_key("alice-key"))
    with pytest.raises(ApiError) as caught:
        asyncio.run(services.uploads.source(bob_owner, upload["id"], "reference_audio.upload"))
    assert caught.value.status == 422 and caught.value.field == "reference_audio.upload"
    assert "POST /v1/uploads first" in caught.value.message

    assert client.get(path, headers=alice).json() == upload
    source = asyncio.run(services.uploads.source(alice_owner, upload["id"], "source.upload"))
    assert source.id == upload["id"] and source.sample_rate == 48_000
    assert source.key == upload_key(alice_owner, upload["id"], "audio.npy")
    assert source.duration_s == upload["duration_s"] and source.filename == "take.wav"
    assert asyncio.run(services.objects.stat(source.key)) is not None


def test_unknown_and_malformed_ids(local: tuple[TestClient, ApiServices]) -> None:
    client, services = local
    for upload_id in ("upl_" + "0" * 28, "nope", "..%2F..%2Fsongs"):
        missing = client.get(f"/v1/uploads/{upload_id}")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    with pytest.raises(ApiError) as caught:
        asyncio.run(services.uploads.source(LOCAL_OWNER, "../songs", "source.upload"))
    assert caught.value.status == 422 and caught.value.field == "source.upload"
    bad_cursor = client.get("/v1/uploads", params={"cursor": "song_1"})
    assert bad_cursor.status_code == 422 and bad_cursor.json()["error"]["field"] == "cursor"


def test_the_list_is_newest_first_in_pages(local: tuple[TestClient, ApiServices]) -> None:
    client, _ = local
    ids = []
    for _ in range(3):
        ids.append(_upload(client, _file("wav", 0.2)).json()["id"])
        time.sleep(0.002)  # ids are time-ordered to the ms
    listed = client.get("/v1/uploads").json()
    assert [u["id"] for u in listed["uploads"]] == ids[::-1] and listed["next_cursor"] is None
    first = client.get("/v1/uploads", params={"limit": 2}).json()
    assert [u["id"] for u in first["uploads"]] == [ids[2], ids[1]]
    rest = client.get("/v1/uploads", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert [u["id"] for u in rest["uploads"]] == [ids[0]] and rest["next_cursor"] is None


def test_delete_removes_the_audio_and_the_record(local: tuple[TestClient, ApiServices]) -> None:
    client, services = local
    upload = _upload(client, _file("wav")).json()
    kept = _upload(client, _file("wav")).json()
    assert asyncio.run(services.objects.list_keys(upload_key(LOCAL_OWNER, upload["id"])))

    assert client.delete(f"/v1/uploads/{upload['id']}").status_code == 204
    assert asyncio.run(services.objects.list_keys(upload_key(LOCAL_OWNER, upload["id"]))) == []
    assert client.get(f"/v1/uploads/{upload['id']}").status_code == 404
    assert client.delete(f"/v1/uploads/{upload['id']}").status_code == 404
    assert [u["id"] for u in client.get("/v1/uploads").json()["uploads"]] == [kept["id"]]


# -- retention -------------------------------------------------------------------------------------


def test_uploads_expire_with_jobs_retention_days(tmp_path: Path) -> None:
    client, services = api_client(_config(tmp_path, jobs={"retention_days": 1.0}))
    objects = services.objects
    uploads = [_upload(client, _file("wav", 0.2)).json() for _ in range(3)]
    for upload in uploads:
        assert upload["expires_at"] == pytest.approx(upload["created_at"] + DAY_S)
    # A crash between the audio and the record leaves audio alone: it expires all the same.
    orphan = "upl_" + uploads[0]["id"][4:16] + "f" * 16
    asyncio.run(objects.put(upload_key(LOCAL_OWNER, orphan, "audio.npy"), b"x", "x"))

    now = time.time()
    assert asyncio.run(sweep_expired_uploads(objects, 1.0, 3, now)) == 0  # not a day old yet
    later = now + 2 * DAY_S
    assert asyncio.run(sweep_expired_uploads(objects, 1.0, 3, later)) == 3  # bounded batches
    assert asyncio.run(sweep_expired_uploads(objects, 1.0, 3, later)) == 1
    assert asyncio.run(sweep_expired_uploads(objects, 1.0, 3, later)) == 0
    assert asyncio.run(objects.list_keys(UPLOADS_ROOT)) == []
    assert client.get("/v1/uploads").json()["uploads"] == []
    with pytest.raises(ApiError):
        asyncio.run(services.uploads.source(LOCAL_OWNER, uploads[0]["id"], "source.upload"))


# -- admission -------------------------------------------------------------------------------------


def test_an_owner_keeps_at_most_max_per_owner_uploads(tmp_path: Path) -> None:
    client, _ = api_client(_config(tmp_path, uploads={"max_per_owner": 2}))
    kept = [_upload(client, _file("wav", 0.3)).json()["id"] for _ in range(2)]
    refused = _upload(client, _file("wav", 0.3))
    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert error["code"] == "too_many_uploads" and error["field"] == "file"
    assert "uploads.max_per_owner" in error["message"] and "DELETE" in error["message"]
    # Deleting one makes room; the cap is per owner, not per server.
    assert client.delete(f"/v1/uploads/{kept[0]}").status_code == 204
    assert _upload(client, _file("wav", 0.3)).status_code == 201


def test_decodes_are_admitted_per_replica_and_a_full_queue_is_a_429(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import serve.services.uploads as uploads_module

    _, services = api_client(
        _config(tmp_path, uploads={"max_concurrent_decodes": 1, "max_waiting_decodes": 1})
    )
    real_decode = uploads_module._decode
    release = threading.Event()
    running: list[int] = []
    most_at_once = 0

    def held_decode(*args: Any) -> Any:
        nonlocal most_at_once
        running.append(1)
        most_at_once = max(most_at_once, len(running))
        release.wait(10)
        try:
            return real_decode(*args)
        finally:
            running.pop()

    monkeypatch.setattr(uploads_module, "_decode", held_decode)

    async def scenario() -> list[Any]:
        create = services.uploads.create
        first = asyncio.create_task(create(LOCAL_OWNER, _file("wav", 0.3), "a.wav"))
        second = asyncio.create_task(create(LOCAL_OWNER, _file("wav", 0.3), "b.wav"))
        # Until the first decodes and the second waits its turn (polled: a loaded machine may
        # take a while to get there, and a fixed sleep would race it).
        deadline = time.monotonic() + 10
        while not (running and services.uploads._waiting_decodes == 1):
            assert time.monotonic() < deadline, "the first two uploads never got going"
            await asyncio.sleep(0.01)
        with pytest.raises(ApiError) as caught:
            await create(LOCAL_OWNER, _file("wav", 0.3), "c.wav")
        release.set()
        return [caught.value, *await asyncio.gather(first, second)]

    refused, *made = asyncio.run(scenario())
    assert refused.status == 429 and refused.code == "uploads_busy" and refused.field == "file"
    assert refused.headers["Retry-After"] == "5"
    assert "uploads.max_concurrent_decodes" in refused.message
    assert [upload.duration_s for upload in made] == [pytest.approx(0.3)] * 2
    assert most_at_once == 1  # one decode at a time, as configured
