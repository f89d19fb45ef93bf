"""The whole graph on Postgres and S3 (SeaweedFS), with `storage.data_dir` on a read-only
directory: every stage keeps its state in the job store and its bytes in the object store, so
no stage needs a shared disk. Events reach SSE streams through LISTEN/NOTIFY."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from serve.local_services import LocalSeaweedFS
from serve.store import open_object_store
from tests.helpers import read_events, wait_for_song

from .conftest import Deployed, cluster_storage

pytestmark = pytest.mark.integration

DeployFn = Callable[..., Deployed]


def test_songs_and_stems_on_postgres_and_s3_without_a_disk(
    deploy: DeployFn,
    postgres_url: str,
    s3_url: str,
    seaweedfs: LocalSeaweedFS,
    read_only_dir: Path,
    tmp_path: Path,
) -> None:
    app = deploy(
        **cluster_storage(postgres_url, s3_url, seaweedfs.endpoint_url, read_only_dir, tmp_path)
    )
    assert app.storage.is_shared and app.storage.database_url == postgres_url
    bodies = [
        {"lyrics": "[verse]\nstores far away\n[chorus]\nla la", "style": "synth pop",
         "duration_s": 6, "variations": 2, "seed": 11},
        {"prompt": "an instrumental lo-fi beat", "instrumental": True, "duration_s": 5,
         "variations": 1, "seed": 12},
    ]  # fmt: skip
    song_ids = [app.client.post("/v1/songs", json=body).json()["id"] for body in bodies]
    events = read_events(app.client, song_ids[0], timeout_s=180)
    assert events[-1][1] == "done", events[-1]
    seqs = [seq for seq, _, _ in events]
    assert seqs == list(range(1, len(seqs) + 1))  # dense, ordered, none lost
    for song_id in song_ids:
        song = wait_for_song(app.client, song_id, timeout_s=180)
        assert song["status"] == "succeeded", song
        for variation in song["variations"]:
            audio = app.client.get(variation["audio"]["wav"])
            assert audio.status_code == 200 and audio.content[:4] == b"RIFF"
            ranged = app.client.get(variation["audio"]["m4a"], headers={"Range": "bytes=0-99"})
            assert ranged.status_code == 206 and len(ranged.content) == 100

    # Stems: the StemMaker renders again and stores four stems in S3.
    stems_url = f"/v1/songs/{song_ids[0]}/variations/0/stems"
    assert app.client.post(stems_url).status_code == 202
    stems = _wait(app, stems_url)
    assert stems["status"] == "succeeded", stems
    drums = app.client.get(stems["stems"][0]["audio"]["wav"])
    assert drums.status_code == 200 and drums.content[:4] == b"RIFF"

    # Nothing was written to the data dir; everything is in the bucket, intact.
    if read_only_dir.exists():
        assert list(read_only_dir.iterdir()) == []
    keys = asyncio.run(open_object_store(app.storage).list_keys(f"songs/{song_ids[0]}/"))
    assert f"songs/{song_ids[0]}/v0/render.npy" in keys  # the raw render, kept for re-mastering
    assert any("/stems/drums." in key for key in keys)
    assert_checksums_match(seaweedfs, s3_url)


def _wait(app: Deployed, url: str, timeout_s: float = 180.0) -> dict[str, Any]:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        stems = app.client.get(url).json()
        if stems["status"] in ("succeeded", "failed"):
            return stems
        time.sleep(0.3)
    raise AssertionError(f"stems did not finish in {timeout_s} s")


def assert_checksums_match(seaweedfs: LocalSeaweedFS, s3_url: str) -> int:
    """Every object in the bucket reads back with the MD5 its ETag promises (single-part
    objects; multipart ETags are checked part by part on write). Returns how many."""
    client = seaweedfs.s3_client()
    bucket = s3_url.removeprefix("s3://").split("/", 1)[0]
    checked = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            etag = item["ETag"].strip('"')
            if "-" in etag:
                continue
            body = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            assert hashlib.md5(body).hexdigest() == etag, item["Key"]
            checked += 1
    assert checked > 0
    return checked
