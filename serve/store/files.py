"""`FilesystemObjectStore` — the object store on one machine's disk (the embedded default).

Each object's content type is kept beside it in a hidden `.NAME.type` file (hidden files are not
keys), so both backends answer `stat` with what `put` was given.
"""

from __future__ import annotations

import asyncio
import hashlib
import mimetypes
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from .objects import ChecksumMismatch, ObjectInfo


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

    @staticmethod
    def _type_path(path: Path) -> Path:
        return path.with_name(f".{path.name}.type")

    @staticmethod
    def _write_atomically(path: Path, data: bytes) -> None:
        handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(handle, "wb") as temp:
                temp.write(data)
            os.replace(temp_name, path)
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise

    def _put(self, key: str, data: bytes, content_type: str) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._write_atomically(self._type_path(path), content_type.encode())
        self._write_atomically(path, data)
        if hashlib.sha256(path.read_bytes()).digest() != hashlib.sha256(data).digest():
            raise ChecksumMismatch(f"{key}: the file on disk differs from what was written")

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        await asyncio.to_thread(self._put, key, data, content_type)

    async def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError as error:
            raise KeyError(key) from error

    def _stat(self, path: Path) -> ObjectInfo | None:
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return None
        try:
            content_type = self._type_path(path).read_text()
        except FileNotFoundError:  # written before content types were kept
            content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return ObjectInfo(size=size, content_type=content_type)

    async def stat(self, key: str) -> ObjectInfo | None:
        return await asyncio.to_thread(self._stat, self._path(key))

    async def iter_range(
        self, key: str, start: int, end: int, chunk_bytes: int = 1 << 20
    ) -> AsyncIterator[bytes]:
        path = self._path(key)

        def read(offset: int, size: int) -> bytes:
            try:
                with path.open("rb") as handle:
                    handle.seek(offset)
                    return handle.read(size)
            except FileNotFoundError as error:
                raise KeyError(key) from error

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
            self._type_path(path).unlink(missing_ok=True)

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

    async def presigned_url(self, key: str, expires_s: float) -> str | None:
        return None  # files are served through the API
