"""`MeteredObjectStore` — any object store, with the bytes written to it counted by kind of
object (`songserve_object_bytes_written`): what each song costs in storage and bandwidth."""

from __future__ import annotations

from collections.abc import AsyncIterator

from .objects import ObjectInfo, ObjectStore, object_kind


class MeteredObjectStore:
    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        from serve.metrics import song_metrics

        await self.inner.put(key, data, content_type)
        song_metrics().bytes_written.inc(len(data), tags={"kind": object_kind(key)})

    async def get(self, key: str) -> bytes:
        return await self.inner.get(key)

    async def stat(self, key: str) -> ObjectInfo | None:
        return await self.inner.stat(key)

    def iter_range(
        self, key: str, start: int, end: int, chunk_bytes: int = 1 << 20
    ) -> AsyncIterator[bytes]:
        return self.inner.iter_range(key, start, end, chunk_bytes)

    async def delete_prefix(self, prefix: str) -> None:
        await self.inner.delete_prefix(prefix)

    async def list_keys(self, prefix: str) -> list[str]:
        return await self.inner.list_keys(prefix)

    async def presigned_url(self, key: str, expires_s: float) -> str | None:
        return await self.inner.presigned_url(key, expires_s)
