"""The LoRA registry: adapters uploaded once, stored on the object store, loaded by any replica.

Each LoRA lives under `loras/<id>/`: `pytorch_lora_weights.safetensors` (the file decoders load)
and `meta.json` (what the API lists). Weights are validated before they are stored, so a decoder
never meets a file it cannot load: safetensors only, a size limit, every key a module of the base
model, rank within `loras.max_rank`.

Decoders read them through `LoraCache`: one copy per node on local disk, shared by the node's
replicas and checked against the registry's size and SHA-256, so an adapter crosses the network
once per node and version, not once per replica and load.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .store import ObjectStore

logger = logging.getLogger("ray.serve")

LORA_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
LORA_WEIGHTS_NAME = "pytorch_lora_weights.safetensors"
LORA_CACHE_DIR_NAME = "songserve-lora-cache"

LoraValidator = Callable[[bytes], dict[str, Any]]
"""Checks a weights file against the base model; returns {"rank", "keys", ...} or raises
ValueError saying what is wrong."""


def lora_weights_key(lora_id: str) -> str:
    """Object-store key of a registered LoRA's weights."""
    return f"loras/{lora_id}/{LORA_WEIGHTS_NAME}"


def _meta_key(lora_id: str) -> str:
    return f"loras/{lora_id}/meta.json"


@dataclass(frozen=True)
class LoraInfo:
    id: str
    model: str
    rank: int
    size_bytes: int
    sha256: str
    created_at: float


class LoraRegistry:
    def __init__(self, objects: ObjectStore) -> None:
        self._objects = objects

    async def register(
        self, lora_id: str, weights: bytes, *, model: str, validate: LoraValidator
    ) -> LoraInfo:
        """Validate and store a LoRA (replacing one with the same id); raises ValueError."""
        if not LORA_ID_PATTERN.match(lora_id):
            raise ValueError(
                "LoRA ids are 1-64 characters of a-z, 0-9, '.', '_' or '-', starting with a "
                "letter or digit"
            )
        # Loading the tensors and hashing hundreds of MB take seconds: off the event loop.
        report, digest = await asyncio.to_thread(
            lambda: (validate(weights), hashlib.sha256(weights).hexdigest())
        )
        info = LoraInfo(
            id=lora_id,
            model=model,
            rank=int(report["rank"]),
            size_bytes=len(weights),
            sha256=digest,
            created_at=time.time(),
        )
        # Weights first: a listed LoRA always has its file.
        await self._objects.put(lora_weights_key(lora_id), weights, "application/octet-stream")
        await self._objects.put(
            _meta_key(lora_id), json.dumps(asdict(info)).encode(), "application/json"
        )
        return info

    async def get(self, lora_id: str) -> LoraInfo | None:
        if not LORA_ID_PATTERN.match(lora_id):
            return None
        try:
            return LoraInfo(**json.loads(await self._objects.get(_meta_key(lora_id))))
        except KeyError:
            return None

    async def list(self) -> list[LoraInfo]:
        keys = await self._objects.list_keys("loras/")
        infos = []
        for key in keys:
            if key.endswith("/meta.json"):
                info = await self.get(key.split("/")[1])
                if info is not None:
                    infos.append(info)
        return infos

    async def delete(self, lora_id: str) -> bool:
        if await self.get(lora_id) is None:
            return False
        await self._objects.delete_prefix(f"loras/{lora_id}")
        return True


def default_lora_cache_dir() -> Path:
    """Where a node keeps its LoRA copies: `songserve-lora-cache` in the system temp dir, one
    directory that every replica on the node (same user) shares."""
    return Path(tempfile.gettempdir()) / LORA_CACHE_DIR_NAME


class LoraCache:
    """Registered LoRA weights on this node's disk, shared by every replica on the node.

    A version lives at `<directory>/<lora id>/<sha256>/pytorch_lora_weights.safetensors`, named
    by the registry's entry, so weights registered again under the same id get a new path, never
    a stale hit (older versions of the id are removed then). A copy is used only when its size
    and SHA-256 match the registry's (hashed once per process and file), so a truncated, damaged
    or planted file is fetched again, never loaded. Files are written to a temporary name and
    renamed into place (`os.replace`): no reader sees half a file. A fetch holds a lock file per
    id (`flock`, released by the kernel if its holder dies), so replicas missing the same LoRA
    at once fetch it once: the others wait, then find the copy.
    """

    def __init__(
        self, objects: ObjectStore, directory: str | Path | None = None, *, poll_s: float = 0.05
    ) -> None:
        """`directory` defaults to `default_lora_cache_dir()`; one this process cannot write
        (another user's, in a shared temp dir) is replaced by a private temporary directory."""
        self._objects = objects
        self._registry = LoraRegistry(objects)
        self._poll_s = poll_s
        self._verified: dict[Path, tuple[int, int]] = {}  # file → (size, mtime_ns) hashed OK
        self.fetches = 0  # weights downloaded by this process (the node's cache misses)
        self.directory = Path(directory) if directory is not None else default_lora_cache_dir()
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            usable = os.access(self.directory, os.W_OK | os.X_OK)
        except OSError:
            usable = False
        if not usable:
            private = Path(tempfile.mkdtemp(prefix=f"{LORA_CACHE_DIR_NAME}-"))
            logger.warning(
                "LoRA cache %s is not writable by this user; caching in %s for this replica only",
                self.directory,
                private,
            )
            self.directory = private

    async def path(self, lora_id: str) -> Path:
        """The local weights file of registered LoRA `lora_id`, fetched from the object store
        only when this node has no intact copy of its registered version.

        Raises KeyError when the id is not registered, ValueError when the stored weights do not
        match their registry entry (registered again while being fetched: try again).
        """
        info = await self._registry.get(lora_id)
        if info is None:
            raise KeyError(f"LoRA {lora_id!r} is not registered (POST /v1/loras)")
        target = self.directory / lora_id / info.sha256 / LORA_WEIGHTS_NAME
        if await asyncio.to_thread(self._intact, target, info):
            return target
        async with self._locked(lora_id):
            # Another replica on this node may have fetched it while this one waited.
            if await asyncio.to_thread(self._intact, target, info):
                return target
            try:
                data = await self._objects.get(lora_weights_key(lora_id))
            except KeyError as error:
                raise KeyError(f"LoRA {lora_id!r} is not registered (POST /v1/loras)") from error
            self.fetches += 1
            await asyncio.to_thread(self._store, target, data, info)
        return target

    def _intact(self, target: Path, info: LoraInfo) -> bool:
        try:
            stat = target.stat()
        except FileNotFoundError:
            return False
        if stat.st_size != info.size_bytes:
            return False
        signature = (stat.st_size, stat.st_mtime_ns)
        if self._verified.get(target) == signature:
            return True
        digest = hashlib.sha256()
        with open(target, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        if digest.hexdigest() != info.sha256:
            return False
        self._verified[target] = signature
        return True

    def _store(self, target: Path, data: bytes, info: LoraInfo) -> None:
        if len(data) != info.size_bytes or hashlib.sha256(data).hexdigest() != info.sha256:
            raise ValueError(
                f"LoRA {info.id!r}: the stored weights differ from its registry entry (it was "
                "registered again while this replica fetched it): try again"
            )
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        try:
            with os.fdopen(handle, "wb") as temp:
                temp.write(data)
            os.replace(temp_name, target)
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise
        stat = target.stat()
        self._verified[target] = (stat.st_size, stat.st_mtime_ns)
        # Older versions of this id are stale: the registry now names this one.
        for version in target.parent.parent.iterdir():
            if version.is_dir() and version != target.parent:
                shutil.rmtree(version, ignore_errors=True)

    @contextlib.asynccontextmanager
    async def _locked(self, lora_id: str) -> AsyncIterator[None]:
        """Hold this node's fetch lock of `lora_id`; polled without blocking, so waiting never
        ties up a thread and a cancelled wait leaves nothing locked."""
        lock_path = self.directory / lora_id / ".lock"

        def open_lock() -> int:
            lock_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            return os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)

        fd = await asyncio.to_thread(open_lock)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    await asyncio.sleep(self._poll_s)
            yield
        finally:
            os.close(fd)  # releases the lock
