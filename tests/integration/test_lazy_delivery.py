"""Cost per song and light calls on a real local Ray:

- With the default config a song stores only m4a, HLS, peaks and the kept master; mp3, flac and
  wav are made on their first request, signed, stored and recorded once — concurrent first
  requests included (the claim in the job store is taken once).
- POST /v1/verify has capacity of its own: it answers while every PostProcessor replica is busy
  mastering.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pipeline.encode import decode_audio
from pipeline.provenance import read_credentials
from serve.store import DeliveryRecord, EventRecord
from tests.helpers import wait_for_song

from .conftest import Deployed

pytestmark = pytest.mark.integration

DeployFn = Callable[..., Deployed]


@pytest.fixture(scope="module")
def app(module_deploy: DeployFn) -> Deployed:
    """The default config, deployed once: each test follows songs of its own."""
    return module_deploy()


def _delivery(app: Deployed, song_id: str, fmt: str) -> DeliveryRecord | None:
    record: DeliveryRecord | None = app._read(lambda store: store.get_delivery(song_id, 0, fmt))
    return record


def _files(app: Deployed, song_id: str) -> dict[str, Path]:
    """The variation's stored files (local object store), by name under songs/<id>/v0/."""
    root = Path(app.storage.storage_path) / "songs" / song_id / "v0"
    return {str(p.relative_to(root)): p for p in root.rglob("*") if p.is_file()}


def test_only_eager_files_are_made_and_lazy_ones_once_on_first_request(app: Deployed) -> None:
    song_id = app.client.post(
        "/v1/songs", json={"style": "bossa nova", "duration_s": 8, "variations": 1, "seed": 11}
    ).json()["id"]
    song = wait_for_song(app.client, song_id)
    assert song["status"] == "succeeded", song
    (variation,) = song["variations"]
    assert set(variation["audio"]) == {"m4a", "mp3", "flac", "wav"}  # every served format linked
    assert variation["provenance"]["c2pa"] == {
        "signed": True,
        "formats": ["m4a", "mp3", "flac", "wav"],
    }
    assert set(app.job(song_id).variations[0].objects) == {"m4a", "hls", "peaks", "master"}
    stored = _files(app, song_id)
    assert {"audio.m4a", "peaks.json", "hls/index.m3u8", "master.flac", "master.json"} <= set(
        stored
    )
    assert not {"audio.mp3", "audio.flac", "audio.wav"} & set(stored)

    # First GET of mp3: made now, signed like the m4a, stored and recorded.
    first = app.client.get(variation["audio"]["mp3"])
    assert first.status_code == 200 and first.headers["content-type"] == "audio/mpeg"
    mp3_file = _files(app, song_id)["audio.mp3"]
    made_at = mp3_file.stat().st_mtime_ns
    report = read_credentials(first.content, "mp3")
    assert report["valid"] is True, report
    assert report["manifest"]["generation"]["seed"] == 11
    m4a = read_credentials(app.client.get(variation["audio"]["m4a"]).content, "m4a")
    assert report["manifest"]["generation"] == m4a["manifest"]["generation"]
    audio, rate = decode_audio(first.content)
    assert rate == 48_000 and abs(audio.shape[1] / rate - variation["duration_s"]) < 0.05
    record = _delivery(app, song_id, "mp3")
    assert record is not None and (record.status, record.claims) == ("delivered", 1)
    assert app.job(song_id).variations[0].objects["mp3"].endswith("/audio.mp3")

    # Second GET: served as stored, nothing encoded or claimed again.
    again = app.client.get(variation["audio"]["mp3"], headers={"Range": "bytes=0-99"})
    assert again.status_code == 206 and again.content == first.content[:100]
    assert mp3_file.stat().st_mtime_ns == made_at
    assert _delivery(app, song_id, "mp3") == record

    # Eight concurrent first GETs of flac: one claim, one encode, the same file for all.
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: app.client.get(variation["audio"]["flac"]), range(8)))
    assert [a.status_code for a in answers] == [200] * 8
    assert len({a.content for a in answers}) == 1
    flac = _delivery(app, song_id, "flac")
    assert flac is not None and (flac.status, flac.claims) == ("delivered", 1)
    assert read_credentials(answers[0].content, "flac")["valid"] is True

    # A HEAD is a first request too: wav is made, then its size is what a GET sends.
    head = app.client.head(variation["audio"]["wav"])
    assert head.status_code == 200
    wav = app.client.get(variation["audio"]["wav"])
    assert int(head.headers["content-length"]) == len(wav.content)
    assert _delivery(app, song_id, "wav").claims == 1  # type: ignore[union-attr]
    lossless = [decode_audio(data)[0] for data in (answers[0].content, wav.content)]
    assert (lossless[0] == lossless[1]).all()  # both 24-bit, from the one master


def _events(app: Deployed, song_id: str) -> list[EventRecord]:
    events: list[EventRecord] = app._read(
        lambda store: store.events_after(song_id, 0, limit=10_000)
    )
    return events


def _mastering(events: list[EventRecord]) -> set[int]:
    """Variations whose mastering has started and not finished, by their progress events."""
    started, finished = set(), set()
    for event in events:
        if event.type == "progress" and event.data["stage"] == "postprocessing":
            step = event.data["step"]
            (finished if step == event.data["steps"] else started).add(event.data["variation"])
    return started - finished


def test_verify_answers_while_every_post_processor_is_mastering(app: Deployed) -> None:
    signed_id = app.client.post(
        "/v1/songs", json={"style": "lofi", "duration_s": 6, "variations": 1, "seed": 2}
    ).json()["id"]
    signed = wait_for_song(app.client, signed_id)["variations"][0]
    m4a = app.client.get(signed["audio"]["m4a"]).content

    # A long song with two variations: both PostProcessor replicas master at once.
    long_id = app.client.post(
        "/v1/songs", json={"style": "ambient drone", "duration_s": 120, "variations": 2}
    ).json()["id"]
    deadline = time.monotonic() + 300
    while len(_mastering(_events(app, long_id))) < 2:
        assert time.monotonic() < deadline, "the long song never reached mastering"
        time.sleep(0.05)

    def verify(_: int) -> tuple[int, dict]:
        response = app.client.post("/v1/verify", files={"file": ("song.m4a", m4a)})
        return response.status_code, response.json()

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(verify, range(12)))
    still_mastering = _mastering(_events(app, long_id))

    assert [status for status, _ in answers] == [200] * 12, answers
    assert all(body["c2pa"]["valid"] is True for _, body in answers)
    assert all(body["c2pa"]["manifest"]["generation"]["seed"] == 2 for _, body in answers)
    # Every answer came back while both masterings were still in flight.
    assert still_mastering == {0, 1}
    assert app.job(long_id).status == "running"
    assert wait_for_song(app.client, long_id, timeout_s=300)["status"] == "succeeded"
