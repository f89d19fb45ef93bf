"""The `ObjectStore` contract, run against every backend: local files, and S3 on a real SeaweedFS
(with and without a key prefix). Then what only S3 has: multipart uploads, checksums checked
against the server's answers, presigned links, the start-up check."""

from __future__ import annotations

import asyncio
import io
import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from serve.config import StorageConfig
from serve.store import ChecksumMismatch, ObjectStore, open_object_store, variation_key
from serve.store.files import FilesystemObjectStore
from serve.store.s3 import S3_MIN_PART_BYTES, ObjectStoreUnavailable, S3ObjectStore
from tests.helpers import free_port

KIB = 1 << 10
SMALL_THRESHOLD = 256 * KIB
"""S3 stores in these tests upload anything above this in parts (of S3's minimum, 5 MiB)."""


run = asyncio.run


def s3_store(s3_url: str, **options: Any) -> S3ObjectStore:
    options.setdefault("multipart_threshold_bytes", SMALL_THRESHOLD)
    options.setdefault("part_size_bytes", S3_MIN_PART_BYTES)
    return S3ObjectStore.from_url(s3_url, **options)


@pytest.fixture(params=["files", "s3", "s3-prefixed"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "files":
        return FilesystemObjectStore(tmp_path / "objects")
    s3_url = request.getfixturevalue("s3_url")
    if request.param == "s3-prefixed":
        s3_url += "/tenants/blue"
    return s3_store(s3_url)


async def collect(chunks: Any) -> list[bytes]:
    return [chunk async for chunk in chunks]


# -- the contract --------------------------------------------------------------------------------


def test_put_get_stat_round_trip_the_bytes_and_content_type(store: ObjectStore) -> None:
    key = variation_key("song_1", 0, "audio.m4a")
    run(store.put(key, b"0123456789", "audio/mp4"))
    assert run(store.get(key)) == b"0123456789"
    info = run(store.stat(key))
    assert info is not None and (info.size, info.content_type) == (10, "audio/mp4")


def test_a_put_replaces_the_whole_object(store: ObjectStore) -> None:
    key = variation_key("song_1", 0, "peaks.json")
    run(store.put(key, b"x" * 1000, "application/json"))
    run(store.put(key, b"new", "text/plain"))  # deterministic keys: a re-run overwrites
    assert run(store.get(key)) == b"new"
    info = run(store.stat(key))
    assert info is not None and (info.size, info.content_type) == (3, "text/plain")


RANGE_CASES = [  # (start, end, chunk_bytes) → chunk sizes
    ((2, 8, 3), [3, 3, 1]),
    ((0, 9999, 4096), [4096, 4096, 1808]),
    ((100, 100, 10), [1]),
    ((9990, 20000, 4), [4, 4, 2]),  # clipped to the object's end
    ((20000, 20010, 4), []),  # entirely past the end
    ((10, 5, 4), []),  # inverted
]


def test_iter_range_yields_inclusive_ranges_in_chunks(store: ObjectStore) -> None:
    data = (bytes(range(256)) * 40)[:10000]
    run(store.put("songs/s/v0/audio.wav", data, "audio/wav"))
    for (start, end, chunk_bytes), expected_sizes in RANGE_CASES:
        chunks = run(collect(store.iter_range("songs/s/v0/audio.wav", start, end, chunk_bytes)))
        case = f"bytes {start}-{end} in chunks of {chunk_bytes}"
        assert [len(chunk) for chunk in chunks] == expected_sizes, case
        assert b"".join(chunks) == data[start : end + 1], case


def test_a_reader_may_stop_early(store: ObjectStore) -> None:
    run(store.put("songs/s/v0/audio.wav", b"a" * 100_000, "audio/wav"))

    async def first_chunk() -> bytes:
        async for chunk in store.iter_range("songs/s/v0/audio.wav", 0, 99_999, 1000):
            return chunk
        raise AssertionError("no chunk")

    assert run(first_chunk()) == b"a" * 1000
    assert run(store.get("songs/s/v0/audio.wav")) == b"a" * 100_000  # the store still works


def test_missing_objects(store: ObjectStore) -> None:
    with pytest.raises(KeyError):
        run(store.get("songs/none/v0/audio.m4a"))
    assert run(store.stat("songs/none/v0/audio.m4a")) is None

    async def read_range() -> list[bytes]:
        return [chunk async for chunk in store.iter_range("songs/none/v0/audio.m4a", 0, 9)]

    with pytest.raises(KeyError):
        run(read_range())
    assert run(store.list_keys("songs/none/")) == []
    run(store.delete_prefix("songs/none"))  # deleting nothing is fine


def test_delete_prefix_deletes_that_prefix_only(store: ObjectStore) -> None:
    for key in ("songs/a/v0/x", "songs/a/v1/y", "songs/ab/v0/x", "songs/b/z"):
        run(store.put(key, key.encode(), "text/plain"))
    run(store.delete_prefix("songs/a"))
    assert run(store.stat("songs/a/v0/x")) is None
    assert run(store.list_keys("songs/")) == ["songs/ab/v0/x", "songs/b/z"]
    run(store.delete_prefix("songs/b/z"))  # an object's own key deletes just it
    assert run(store.list_keys("songs")) == ["songs/ab/v0/x"]


def test_list_keys_is_sorted_and_relative_to_the_store(store: ObjectStore) -> None:
    keys = ["songs/j/v1/b", "loras/x.safetensors", "songs/j/v0/z", "songs/j/v0/a", "songs/k/v0"]
    for key in keys:
        run(store.put(key, b"-", "application/octet-stream"))
    expected = sorted(key for key in keys if key.startswith("songs/j/"))
    assert run(store.list_keys("songs/j/")) == expected
    assert run(store.list_keys("songs/j")) == expected  # the trailing "/" is implied
    assert run(store.list_keys("loras/")) == ["loras/x.safetensors"]


def test_a_large_object_round_trips(store: ObjectStore) -> None:
    # Above S3's 5 MiB part minimum and the tests' 256 KiB threshold: two parts on S3.
    data = os.urandom(S3_MIN_PART_BYTES + 300 * KIB)
    run(store.put("stems/big.wav", data, "audio/wav"))
    assert run(store.get("stems/big.wav")) == data
    info = run(store.stat("stems/big.wav"))
    assert info is not None and (info.size, info.content_type) == (len(data), "audio/wav")
    tail = run(collect(store.iter_range("stems/big.wav", len(data) - 1000, len(data) - 1)))
    assert b"".join(tail) == data[-1000:]


def test_presigned_urls(store: ObjectStore) -> None:
    run(store.put("songs/p/v0/audio.mp3", b"ID3 and some frames", "audio/mpeg"))
    url = run(store.presigned_url("songs/p/v0/audio.mp3", expires_s=60))
    if isinstance(store, FilesystemObjectStore):
        assert url is None  # local files are served through the API
        return
    assert url is not None
    response = httpx.get(url)  # no credentials: the signature in the URL is the permission
    assert response.status_code == 200
    assert response.content == b"ID3 and some frames"
    assert response.headers["content-type"] == "audio/mpeg"


@pytest.mark.parametrize("key", ["../outside", "/etc/passwd", "songs/../../x", ""])
def test_invalid_keys_are_refused(store: ObjectStore, key: str) -> None:
    with pytest.raises(KeyError):
        run(store.put(key, b"x", "text/plain"))
    with pytest.raises(KeyError):
        run(store.get(key))
    with pytest.raises(KeyError):
        run(store.stat(key))


# -- S3 only: multipart uploads and checksums against the server's answers -----------------------


def _corrupt_bodies(store: S3ObjectStore, operation: str, *, drop_md5: bool) -> None:
    """Flip the first byte of every `operation` request body after the store computed its MD5,
    as a faulty network or proxy would; with `drop_md5`, also drop the Content-MD5 header (a proxy
    that strips it), so only the ETag check is left to notice."""

    def corrupt(request: Any, **_: Any) -> None:
        body = request.data.read() if hasattr(request.data, "read") else bytes(request.data)
        request.data = io.BytesIO(bytes([body[0] ^ 0xFF]) + body[1:])
        if drop_md5 and "Content-MD5" in request.headers:
            del request.headers["Content-MD5"]

    # before-sign: the signature then covers the corrupted body, so the server judges the bytes
    store.client.meta.events.register(f"before-sign.s3.{operation}", corrupt)


def _uploads_in_progress(store: S3ObjectStore) -> list[Any]:
    return list(store.client.list_multipart_uploads(Bucket=store.bucket).get("Uploads", []))


def test_multipart_upload_etag_is_checked_part_by_part(s3_url: str) -> None:
    store = s3_store(s3_url)
    data = os.urandom(S3_MIN_PART_BYTES + 300 * KIB)
    run(store.put("stems/big.wav", data, "audio/wav"))
    head = store.client.head_object(Bucket=store.bucket, Key="stems/big.wav")
    assert head["ETag"].strip('"').endswith("-2")  # really two parts
    assert run(store.get("stems/big.wav")) == data
    assert _uploads_in_progress(store) == []


def test_small_writes_are_one_put(s3_url: str) -> None:
    store = s3_store(s3_url)
    run(store.put("songs/s/v0/peaks.json", b"[]" * 1000, "application/json"))
    head = store.client.head_object(Bucket=store.bucket, Key="songs/s/v0/peaks.json")
    assert "-" not in head["ETag"]


def test_bytes_corrupted_in_flight_are_refused_by_the_server(s3_url: str) -> None:
    store = s3_store(s3_url)
    _corrupt_bodies(store, "PutObject", drop_md5=False)
    with pytest.raises(ChecksumMismatch, match="BadDigest"):
        run(store.put("songs/c/v0/audio.m4a", b"the real bytes", "audio/mp4"))
    assert run(store.stat("songs/c/v0/audio.m4a")) is None


def test_a_stored_object_with_the_wrong_etag_is_caught_and_deleted(s3_url: str) -> None:
    store = s3_store(s3_url)
    _corrupt_bodies(store, "PutObject", drop_md5=True)
    with pytest.raises(ChecksumMismatch, match="ETag"):
        run(store.put("songs/c/v0/audio.m4a", b"the real bytes", "audio/mp4"))
    assert run(store.stat("songs/c/v0/audio.m4a")) is None  # never served corrupt


@pytest.mark.parametrize("drop_md5", [False, True])
def test_a_corrupted_part_aborts_the_multipart_upload(s3_url: str, drop_md5: bool) -> None:
    store = s3_store(s3_url)
    _corrupt_bodies(store, "UploadPart", drop_md5=drop_md5)
    with pytest.raises(ChecksumMismatch):
        run(store.put("stems/big.wav", os.urandom(S3_MIN_PART_BYTES + KIB), "audio/wav"))
    assert run(store.stat("stems/big.wav")) is None
    assert _uploads_in_progress(store) == []


def test_store_calls_do_not_block_the_event_loop(
    s3_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = s3_store(s3_url)
    real_put = store.client.put_object

    def slow_put(**kwargs: Any) -> Any:
        time.sleep(0.3)
        return real_put(**kwargs)

    monkeypatch.setattr(store.client, "put_object", slow_put)

    async def scenario() -> int:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        await store.put("songs/t/v0/audio.m4a", b"x", "audio/mp4")
        task.cancel()
        return ticks

    assert run(scenario()) >= 10


def test_a_prefix_keeps_stores_apart(s3_url: str) -> None:
    blue, green = s3_store(s3_url + "/blue"), s3_store(s3_url + "/green/")
    run(blue.put("songs/a/v0/x", b"blue", "text/plain"))
    run(green.put("songs/a/v0/x", b"green", "text/plain"))
    run(blue.delete_prefix("songs"))
    assert run(green.get("songs/a/v0/x")) == b"green"
    whole = s3_store(s3_url)
    assert run(whole.list_keys("green")) == ["green/songs/a/v0/x"]


# -- S3 only: configuration and start-up checks ---------------------------------------------------


def test_from_url_reads_the_prefix_and_the_endpoint_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SONGSERVE_S3_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    store = open_object_store(StorageConfig(storage_url="s3://media/songserve/prod/")).inner
    assert isinstance(store, S3ObjectStore)
    assert (store.bucket, store.prefix, store.region) == ("media", "songserve/prod", "eu-west-3")
    assert store.endpoint_url == "http://127.0.0.1:9"
    explicit = open_object_store(
        StorageConfig(storage_url="s3://media", s3_endpoint_url="http://10.0.0.1:8333")
    ).inner
    assert isinstance(explicit, S3ObjectStore) and explicit.endpoint_url == "http://10.0.0.1:8333"
    with pytest.raises(ValueError, match="part"):
        S3ObjectStore("media", part_size_bytes=1 << 20)


def test_ensure_bucket_creates_it_once(s3_url: str) -> None:
    store = s3_store(s3_url + "-new")
    with pytest.raises(ObjectStoreUnavailable, match="does not exist"):
        store.check()
    run(store.ensure_bucket())
    run(store.ensure_bucket())  # idempotent
    store.check()
    run(store.put("a", b"b", "text/plain"))
    store.client.delete_bucket(Bucket=store.bucket)


def test_check_passes_on_a_usable_store(s3_url: str) -> None:
    s3_store(s3_url).check()


def test_check_names_the_setting_when_credentials_are_refused(
    s3_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-0123456789")
    with pytest.raises(ObjectStoreUnavailable) as caught:
        s3_store(s3_url).check()
    message = str(caught.value)
    assert "storage.storage_url" in message and "AWS_SECRET_ACCESS_KEY" in message
    assert "not-the-secret-0123456789" not in message


def test_check_fails_fast_on_an_unreachable_endpoint(
    s3_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = os.environ["AWS_SECRET_ACCESS_KEY"]
    store = S3ObjectStore.from_url(
        s3_url, endpoint_url=f"http://songserve:{secret}@127.0.0.1:{free_port()}"
    )
    started = time.monotonic()
    with pytest.raises(ObjectStoreUnavailable) as caught:
        store.check()
    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert "SONGSERVE_S3_ENDPOINT_URL" in message and "cannot connect" in message
    assert secret not in message
    assert urlsplit(store.endpoint_url or "").password == secret  # it was there to leak
