"""FilesystemObjectStore and HTTP Range parsing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from serve.http.errors import ApiError
from serve.http.media import parse_byte_range
from serve.store import variation_key
from serve.store.files import FilesystemObjectStore


def test_put_get_stat_range_and_overwrite(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = FilesystemObjectStore(tmp_path)
        key = variation_key("song_1", 0, "audio.m4a")
        await store.put(key, b"0123456789", "audio/mp4")
        assert await store.get(key) == b"0123456789"
        info = await store.stat(key)
        assert info is not None and info.size == 10 and info.content_type == "audio/mp4"
        chunks = [c async for c in store.iter_range(key, 2, 8, chunk_bytes=3)]
        assert chunks == [b"234", b"567", b"8"]
        await store.put(key, b"new", "audio/mp4")  # deterministic keys: a re-run overwrites
        assert await store.get(key) == b"new"
        files = (tmp_path / "songs/song_1/v0").iterdir()
        assert sorted(p.name for p in files if not p.name.startswith(".")) == ["audio.m4a"]
        await store.delete_prefix("songs/song_1")
        assert await store.stat(key) is None
        with pytest.raises(KeyError):
            await store.get(key)

    asyncio.run(scenario())


@pytest.mark.parametrize("key", ["../outside", "/etc/passwd", "songs/../../x", ""])
def test_keys_cannot_escape_the_root(tmp_path: Path, key: str) -> None:
    store = FilesystemObjectStore(tmp_path / "root")
    with pytest.raises(KeyError):
        asyncio.run(store.put(key, b"x", "text/plain"))


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-99", (0, 99)),
        ("bytes=100-", (100, 999)),
        ("bytes=-100", (900, 999)),
        ("bytes=990-2000", (990, 999)),
        ("bytes=-5000", (0, 999)),
        ("bytes=0-1,5-6", None),  # multi-range: whole object
        ("items=0-1", None),
        ("bytes=abc", None),
        ("bytes=5-2", None),  # an invalid range-spec is ignored (RFC 9110 §14.1.1): 200
        ("bytes=²-3", None),
        ("bytes=0-" + "9" * 5000, (0, 999)),  # past any file: to its end, not a 500
    ],
)
def test_parse_byte_range(header: str | None, expected: tuple[int, int] | None) -> None:
    assert parse_byte_range(header, 1000) == expected


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=-0", "bytes=" + "9" * 5000 + "-"])
def test_unsatisfiable_range_is_416_with_the_size(header: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_byte_range(header, 1000)
    assert caught.value.status == 416
    assert caught.value.headers["Content-Range"] == "bytes */1000"
