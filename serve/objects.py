"""The object store: encoded audio, peaks and other artefacts, under deterministic keys.

Keys are derived from (job, variation, artefact) so a re-run after a crash overwrites instead of
duplicating. `ObjectStore` is the interface; `FilesystemObjectStore` is the embedded implementation.
An S3 implementation plugs in behind the same methods.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

CONTENT_TYPES = {
    ".m4a": "audio/mp4",
    ".mp3": "audio/mpeg",
    ".flac": "audio/flac",
    ".wav": "audio/wav",
    ".json": "application/json",
}


def variation_key(job_id: str, index: int, name: str) -> str:
    """The key of one artefact of a variation, e.g. `songs/<job>/v0/audio.m4a`."""
    return f"songs/{job_id}/v{index}/{name}"


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    content_type: str


class ObjectStore(Protocol):
    async def put(self, key: str, data: bytes, content_type: str) -> None:
        """Store `data` under `key`, replacing what was there atomically."""
        ...

    async def get(self, key: str) -> bytes:
        """The whole object; raises KeyError when missing."""
        ...

    async def stat(self, key: str) -> ObjectInfo | None: ...

    def iter_range(
        self, key: str, start: int, end: int, chunk_bytes: int = 1 << 20
    ) -> AsyncIterator[bytes]:
        """Bytes `start..end` inclusive, in chunks."""
        ...

    async def delete_prefix(self, prefix: str) -> None: ...

    async def list_keys(self, prefix: str) -> list[str]:
        """Every key under `prefix` (a folder-like path ending in "/"), sorted."""
        ...


class FilesystemObjectStore:
    """`ObjectStore` on a local directory; writes go to a temp file and are renamed into place."""

    def __init__(self, root: str | Path) -> None:
        self._root = Path(root).resolve()
        self._root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        path = (self._root / key).resolve()
        if not path.is_relative_to(self._root) or path == self._root:
            raise KeyError(f"invalid object key {key!r}")
        return path

    def _put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(handle, "wb") as temp:
                temp.write(data)
            os.replace(temp_name, path)
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        await asyncio.to_thread(self._put, key, data)

    async def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError as error:
            raise KeyError(key) from error

    async def stat(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return None
        return ObjectInfo(
            size=size, content_type=CONTENT_TYPES.get(path.suffix, "application/octet-stream")
        )

    async def iter_range(
        self, key: str, start: int, end: int, chunk_bytes: int = 1 << 20
    ) -> AsyncIterator[bytes]:
        path = self._path(key)

        def read(offset: int, size: int) -> bytes:
            with path.open("rb") as handle:
                handle.seek(offset)
                return handle.read(size)

        offset = start
        while offset <= end:
            chunk = await asyncio.to_thread(read, offset, min(chunk_bytes, end - offset + 1))
            if not chunk:
                break
            offset += len(chunk)
            yield chunk

    async def delete_prefix(self, prefix: str) -> None:
        path = self._path(prefix.rstrip("/"))
        if path.is_dir():
            await asyncio.to_thread(shutil.rmtree, path, True)
        else:
            path.unlink(missing_ok=True)

    async def list_keys(self, prefix: str) -> list[str]:
        base = self._path(prefix.rstrip("/"))
        if not base.is_dir():
            return []

        def walk() -> list[str]:
            return sorted(
                str(path.relative_to(self._root))
                for path in base.rglob("*")
                if path.is_file() and not path.name.startswith(".")
            )

        return await asyncio.to_thread(walk)


def open_object_store(storage_url: str) -> ObjectStore:
    """The object store for a (resolved) `storage.storage_url`."""
    scheme, _, rest = storage_url.partition("://")
    if scheme == "file":
        return FilesystemObjectStore(rest)
    raise ValueError(f"storage.storage_url: unsupported scheme {scheme!r}; use file://PATH")
