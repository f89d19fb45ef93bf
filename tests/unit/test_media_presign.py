"""Media through a presigned S3 link (`storage.presign_media`): the API answers with a redirect
to the object, and the link serves the bytes and ranges itself; without it, the API proxies."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from fastapi.responses import RedirectResponse, StreamingResponse

from serve.config import resolve_config
from serve.http.auth import LOCAL_OWNER
from serve.http.media import object_response
from serve.local_services import LocalSeaweedFS
from serve.services import ApiServices
from serve.store import open_job_store, open_object_store, variation_key
from tests.http_graph import api_services

AUDIO = bytes(range(256)) * 40


def _api_with_a_finished_song(
    tmp_path: Path, s3_url: str, endpoint_url: str, presign: bool
) -> tuple[ApiServices, str]:
    config = resolve_config(
        {
            "storage": {
                "data_dir": str(tmp_path),
                "storage_url": s3_url,
                "s3_endpoint_url": endpoint_url,
                "presign_media": presign,
            }
        }
    )

    async def make_song() -> str:
        jobs = open_job_store(config.storage)
        job, _ = await jobs.create_job(owner=LOCAL_OWNER, request={}, seed=1, variations=1)
        claimed = await jobs.claim_next("test", lease_s=30, max_attempts=1)
        assert claimed is not None and claimed.lease_token is not None
        key = variation_key(job.id, 0, "audio.wav")
        await open_object_store(config.storage).put(key, AUDIO, "audio/wav")
        await jobs.update_variation(
            job.id, 0, claimed.lease_token, status="succeeded", objects={"wav": key}
        )
        await jobs.close()
        return job.id

    return api_services(config), asyncio.run(make_song())


async def _wav(api: ApiServices, song_id: str, range_header: str) -> object:
    key, filename = await api.media.audio_key(song_id, 0, "wav", LOCAL_OWNER)
    return await object_response(api.objects, api.config, key, filename, range_header, False)


def test_presigned_media_redirects_to_a_link_that_serves_ranges(
    tmp_path: Path, s3_url: str, seaweedfs: LocalSeaweedFS
) -> None:
    api, song_id = _api_with_a_finished_song(tmp_path, s3_url, seaweedfs.endpoint_url, True)
    response = asyncio.run(_wav(api, song_id, "bytes=10-19"))
    assert isinstance(response, RedirectResponse) and response.status_code == 307
    link = response.headers["location"]
    assert link.startswith(seaweedfs.endpoint_url) and "Signature" in link
    ranged = httpx.get(link, headers={"Range": "bytes=10-19"})  # no credentials
    assert ranged.status_code == 206 and ranged.content == AUDIO[10:20]
    whole = httpx.get(link)
    assert whole.content == AUDIO and whole.headers["content-type"] == "audio/wav"


def test_without_presigning_the_api_proxies_the_bytes(
    tmp_path: Path, s3_url: str, seaweedfs: LocalSeaweedFS
) -> None:
    api, song_id = _api_with_a_finished_song(tmp_path, s3_url, seaweedfs.endpoint_url, False)
    response = asyncio.run(_wav(api, song_id, "bytes=10-19"))
    assert isinstance(response, StreamingResponse) and response.status_code == 206

    async def body() -> bytes:
        return b"".join([chunk async for chunk in response.body_iterator])  # type: ignore[misc]

    assert asyncio.run(body()) == AUDIO[10:20]
