"""End to end: `serve run` on the embedded default config in a subprocess, spoken to over HTTP."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from pipeline.encode import decode_audio
from pipeline.loudness import measure_loudness_lufs
from tests.helpers import wait_for_song

from .conftest import LocalServer

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(local_server: LocalServer) -> str:
    """`serve run` of the embedded default (tests/e2e/conftest.py), shared by the e2e tier."""
    return local_server.base_url


@pytest.fixture
def client(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=60) as http:
        yield http


def test_healthz_and_pools(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    (pool,) = client.get("/v1/pools").json()["pools"]
    assert {key: pool[key] for key in ("name", "model", "placeable", "reason")} == {
        "name": "Sketch",
        "model": "sketch",
        "placeable": True,
        "reason": None,
    }
    assert pool["in_flight"] == 0
    # local.yaml: 2 Sketch replicas × max_ongoing_requests 1, once the router has counted the
    # running replicas (it refreshes every 15 s; until then a pool counts as one replica).
    deadline = time.monotonic() + 40
    while pool["replicas"] != 2:
        assert pool["capacity"] == 1, pool
        assert time.monotonic() < deadline, pool
        time.sleep(1)
        (pool,) = client.get("/v1/pools").json()["pools"]
    assert pool["capacity"] == 2


def test_a_30_second_song_in_every_format(client: httpx.Client) -> None:
    accepted = client.post(
        "/v1/songs",
        json={"prompt": "a sunny indie-pop song about sailing home", "loudness_lufs": -14},
    )
    assert accepted.status_code == 202
    body = accepted.json()
    assert body["status"] == "queued"
    assert body["links"] == {
        "self": f"/v1/songs/{body['id']}",
        "events": f"/v1/songs/{body['id']}/events",
    }
    assert accepted.headers["location"] == body["links"]["self"]

    song = wait_for_song(client, body["id"])
    assert song["status"] == "succeeded", song
    assert song["stage"] == "done" and song["progress"] == 1.0
    assert "[verse]" in song["lyrics"] and "[chorus]" in song["lyrics"]
    assert song["lyrics_source"] == {
        "engine": "template",
        "model": "template-v1",
        "fallback_reason": None,
        "repairs": [],
    }
    assert song["tags"]["genre"] and song["tags"]["caption"]
    assert len(song["variations"]) == 2
    for variation in song["variations"]:
        assert variation["status"] == "succeeded"
        assert variation["sample_rate"] == 48_000
        assert abs(variation["duration_s"] - 30) <= 0.5
        assert abs(variation["loudness_lufs"] - (-14)) <= 0.5
        assert variation["true_peak_dbtp"] <= -1.0
        assert set(variation["audio"]) == {"m4a", "mp3", "flac", "wav"}
        expected_types = {
            "m4a": "audio/mp4",
            "mp3": "audio/mpeg",
            "flac": "audio/flac",
            "wav": "audio/wav",
        }
        for fmt, url in variation["audio"].items():
            response = client.get(url)
            assert response.status_code == 200
            assert response.headers["content-type"] == expected_types[fmt]
            audio, sample_rate = decode_audio(response.content)
            assert sample_rate == 48_000 and audio.shape[0] == 2
            assert abs(audio.shape[1] / sample_rate - 30) <= 0.5, fmt
            assert abs(measure_loudness_lufs(audio, sample_rate) - (-14)) <= 1.0, fmt
        peaks = client.get(variation["peaks"]).json()
        assert peaks["sample_rate"] == 48_000 and peaks["samples_per_peak"] > 0
        assert abs(len(peaks["peaks"]) * peaks["samples_per_peak"] / 48_000 - 30) < 0.1
        assert all(low <= high for low, high in peaks["peaks"])


def test_hls_plays_through_a_real_client(server: str, client: httpx.Client) -> None:
    import av

    song_id = client.post(
        "/v1/songs", json={"style": "lofi hip hop", "duration_s": 10, "variations": 1}
    ).json()["id"]
    song = wait_for_song(client, song_id)
    (variation,) = song["variations"]
    playlist_url = variation["hls"]
    assert playlist_url.endswith("/hls/index.m3u8")
    playlist = client.get(playlist_url)
    assert playlist.headers["content-type"] == "application/vnd.apple.mpegurl"
    segments = [line for line in playlist.text.splitlines() if line and not line.startswith("#")]
    assert segments and all("/" not in name for name in segments)  # relative to the playlist
    # FFmpeg's HLS demuxer fetches the playlist and every segment over HTTP, like a player.
    decoded = 0
    with av.open(f"{server}{playlist_url}") as container:
        for frame in container.decode(audio=0):
            decoded += frame.samples
    assert abs(decoded / 48_000 - variation["duration_s"]) < 0.1
    for name in ("audio.wav", "..%2Faudio.m4a", "seg-99999.aac"):  # only this rendition's files
        assert client.get(playlist_url.replace("index.m3u8", name)).status_code == 404


def test_every_delivered_file_is_signed_and_verify_reports_it(client: httpx.Client) -> None:
    from pipeline.provenance import read_credentials

    song_id = client.post(
        "/v1/songs", json={"prompt": "a jazz ballad for a rainy evening", "duration_s": 8,
                           "variations": 1, "seed": 77}
    ).json()["id"]  # fmt: skip
    song = wait_for_song(client, song_id)
    (variation,) = song["variations"]
    assert variation["provenance"]["c2pa"]["signed"] is True
    assert variation["provenance"]["watermark"] == "not configured"  # no AudioSeal weights here
    for fmt, url in variation["audio"].items():
        data = client.get(url).content
        credentials = read_credentials(data, fmt)
        assert credentials["present"] and credentials["valid"], (fmt, credentials["errors"])
        generation = credentials["manifest"]["generation"]
        assert (generation["model_id"], generation["seed"]) == ("sketch", 77), fmt

        verified = client.post("/v1/verify", files={"file": (f"song.{fmt}", data)})
        assert verified.status_code == 200, verified.text
        report = verified.json()
        assert report["format"] == fmt and report["c2pa"]["valid"] is True
        assert report["watermark"] == "not configured"

        tampered = bytearray(data)
        middle = len(tampered) // 2
        tampered[middle : middle + 64] = bytes(b ^ 0xFF for b in tampered[middle : middle + 64])
        report = client.post("/v1/verify", files={"file": ("x", bytes(tampered))}).json()
        assert report["c2pa"]["present"] and not report["c2pa"]["valid"], fmt

    refused = client.post("/v1/verify", files={"file": ("notes.txt", b"just some text" * 100)})
    assert refused.status_code == 415
    assert refused.json()["error"]["field"] == "file"


def test_range_requests(client: httpx.Client) -> None:
    song_id = client.post(
        "/v1/songs", json={"style": "jazz trio", "duration_s": 6, "variations": 1}
    ).json()["id"]
    url = wait_for_song(client, song_id)["variations"][0]["audio"]["mp3"]
    whole = client.get(url)
    assert whole.headers["accept-ranges"] == "bytes"
    part = client.get(url, headers={"Range": "bytes=100-1099"})
    assert part.status_code == 206
    assert part.content == whole.content[100:1100]
    assert part.headers["content-range"] == f"bytes 100-1099/{len(whole.content)}"
    tail = client.get(url, headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == whole.content[-10:]
    beyond = client.get(url, headers={"Range": f"bytes={len(whole.content)}-"})
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == f"bytes */{len(whole.content)}"
    head = client.head(url)
    assert head.status_code == 200 and int(head.headers["content-length"]) == len(whole.content)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": "x", "duration_s": 0}, "duration_s"),
        ({"prompt": "x", "variations": 9}, "variations"),
        ({"lyrics": "[verse]\nla la", "instrumental": True}, "lyrics"),
        ({}, "prompt"),
        ({"prompt": "x", "model": "no-such-model"}, "model"),
        ({"lyrics": "a" * 6000}, "lyrics"),
        ({"prompt": "x", "language": "english"}, "language"),
        ({"prompt": "x", "loudness_lufs": 0}, "loudness_lufs"),
        ({"prompt": "x", "lora": {"id": "nope"}}, "lora.id"),
        ({"prompt": "x", "lora": {"id": "nope", "scale": 5}}, "lora.scale"),
        ({"prompt": "x", "durationS": 10}, "durationS"),
        ({"prompt": "   "}, "prompt"),
    ],
)
def test_bad_input_names_the_field(client: httpx.Client, body: dict, field: str) -> None:
    response = client.post("/v1/songs", json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == field and error["code"] == "invalid_request" and error["message"]


def test_bodies_that_are_not_json_objects(client: httpx.Client) -> None:
    empty = client.post("/v1/songs", content=b"", headers={"Content-Type": "application/json"})
    assert empty.status_code == 422 and empty.json()["error"]["field"] == "body"
    broken = client.post("/v1/songs", content=b"{", headers={"Content-Type": "application/json"})
    assert broken.status_code == 400 and broken.json()["error"]["field"] == "body"
    assert broken.json()["error"]["code"] == "invalid_body"


def test_the_suno_compatible_surface_makes_two_playable_clips(client: httpx.Client) -> None:
    clips = client.post(
        "/api/custom_generate",
        json={
            "prompt": "[Verse]\nsalt on the rail\n[Chorus]\nhome, home",
            "tags": "sea shanty, accordion",
            "negative_tags": "metal",
            "title": "Harbour",
            "model": "chirp-v3-5",
            "wait_audio": True,
        },
        timeout=180,
    )
    assert clips.status_code == 200, clips.text
    assert [clip["status"] for clip in clips.json()] == ["complete", "complete"]
    for clip in clips.json():
        assert clip["title"] == "Harbour" and clip["tags"] == "sea shanty, accordion"
        assert clip["negative_tags"] == "metal" and clip["duration"] > 0
        mp3 = client.get(clip["audio_url"])
        assert mp3.status_code == 200 and mp3.headers["content-type"] == "audio/mpeg"
        assert mp3.content[:3] == b"ID3" or mp3.content[0] == 0xFF
    ids = ",".join(clip["id"] for clip in clips.json())
    again = client.get("/api/get", params={"ids": ids}).json()
    assert [clip["id"] for clip in again] == ids.split(",")
    queued = client.post("/api/generate", json={"prompt": "a lullaby for a cat"}).json()
    assert len(queued) == 2 and {c["status"] for c in queued} <= {"queued", "streaming"}
    lyrics = client.post("/api/generate_lyrics", json={"prompt": "a rainy city"}).json()
    assert lyrics["status"] == "complete" and "[" in lyrics["text"]
    assert client.get("/api/get_limit").json()["period"] == "day"


def test_oversized_bodies_are_refused_unread(client: httpx.Client) -> None:
    huge = client.post(
        "/v1/songs", content=b"x" * 300_000, headers={"Content-Type": "application/json"}
    )
    assert huge.status_code == 413
    assert huge.json()["error"] == {
        "code": "request_too_large",
        "message": "the request body is over 262144 bytes (every JSON body of the API is far "
        "smaller)",
        "field": "body",
    }


def test_unknown_ids_are_404(client: httpx.Client) -> None:
    for path in (
        "/v1/songs/song_nope",
        "/v1/songs/song_nope/events",
        "/v1/songs/song_nope/variations/0/audio.m4a",
    ):
        response = client.get(path)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"


def test_list_lyrics_and_tags(client: httpx.Client) -> None:
    listed = client.get("/v1/songs", params={"limit": 2}).json()
    assert len(listed["songs"]) == 2
    created = [s["created_at"] for s in listed["songs"]]
    assert created == sorted(created, reverse=True)
    assert client.get("/v1/songs", params={"limit": 500}).status_code == 422

    lyrics = client.post("/v1/lyrics", json={"prompt": "sailing home", "duration_s": 60}).json()
    tags = [s["tag"] for s in lyrics["sections"]]
    assert "verse" in tags and "chorus" in tags
    assert lyrics["lyrics"].startswith("[")
    assert lyrics["source"]["engine"] == "template" and lyrics["source"]["fallback_reason"] is None

    normalized = client.post("/v1/tags/normalize", json={"text": "chill lofi beats, 85 bpm"})
    assert normalized.status_code == 200
    data = normalized.json()
    assert set(data) == {
        "genre",
        "subgenre",
        "moods",
        "bpm",
        "key",
        "instruments",
        "vocal",
        "language",
        "caption",
        "models",
    }
    assert data["bpm"] == 85
    assert data["models"]["ace_step"] == {
        "caption": data["caption"],
        "bpm": 85,
        "keyscale": data["key"],
        "timesignature": "4",
    }
    yue = data["models"]["yue"]
    assert yue["tags"][0] == data["genre"].replace("hip hop", "hip-hop")
    assert yue["prompt"] == " ".join(yue["tags"])


def test_cli_generate_writes_playable_files(server: str, tmp_path: Path) -> None:
    out = tmp_path / "sea.m4a"
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("songserve")),
            "--url",
            server,
            "generate",
            "a sunny indie-pop song about sailing home",
            "--duration",
            "10",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    assert "100.0%" in result.stderr and "step" in result.stderr  # the SSE-driven progress bar
    files = sorted(tmp_path.glob("sea-*.m4a"))
    assert [f.name for f in files] == ["sea-1.m4a", "sea-2.m4a"]
    decoded = [decode_audio(f.read_bytes())[0] for f in files]
    assert all(abs(a.shape[1] / 48_000 - 10) <= 0.5 for a in decoded)
    assert not np.allclose(decoded[0][:, :48_000], decoded[1][:, :48_000])

    status = subprocess.run(
        [str(Path(sys.executable).with_name("songserve")), "--url", server, "status", "song_x"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 1 and "no song with id" in status.stderr


def test_songserve_stems_downloads_stems_that_add_up_to_the_song(
    server: str, client: httpx.Client, tmp_path: Path
) -> None:
    song_id = client.post(
        "/v1/songs", json={"style": "reggae", "duration_s": 10, "variations": 1, "seed": 21}
    ).json()["id"]
    variation = wait_for_song(client, song_id)["variations"][0]
    out_dir = tmp_path / "stems"
    songserve = str(Path(sys.executable).with_name("songserve"))
    command = [songserve, "--url", server, "stems", song_id, "--format", "wav",
               "--out-dir", str(out_dir)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert "exact" in done.stdout
    names = sorted(path.stem for path in out_dir.glob("*.wav"))
    assert names == ["bass", "drums", "other", "vocals"]
    mix, _ = decode_audio(client.get(variation["audio"]["wav"]).content)
    total = sum(decode_audio((out_dir / f"{name}.wav").read_bytes())[0] for name in names)
    assert float(np.max(np.abs(total - mix))) <= 3.5 / 32768
    # Asked again: the stems exist, nothing is made twice.
    again = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
