"""The LoRA registry: adapters uploaded once, stored on the object store, loaded by any replica.

Scopes. Every LoRA belongs to one scope: its uploader's (the caller's owner id, see
`serve.http.auth`), or `shared` for the operator's (`loras.preload`), which every owner may use
and none may change. A `LoraRef` names a LoRA across scopes, as the string `<scope>/<id>`
(`own_1f…/my-style`, `shared/lofi`): ids never hold a '/', and an owner id is never `shared`
(`owner_scope` refuses one that could be), so a ref is unique. A song request's `lora.id` is
resolved once, when the song is accepted (the caller's own LoRA first, then a shared one), and
the song keeps the ref: renders load exactly that LoRA. A ref names its owner, so API answers
and content credentials show the id, never the ref.

Key layout (`lora_key`, the one place it is defined): `loras/<scope>/<id>/` holds
`pytorch_lora_weights.safetensors` (the file decoders load) and `meta.json` (what the API lists).

Old layout. LoRAs registered before scopes existed live at `loras/<id>/` (no scope). They were
visible to every tenant, so they are read in place as shared (operator) LoRAs: never moved or
rewritten, listed with the shared ones, read-only through the API (an operator removes one from
the object store). A shared LoRA of the same id in the scoped layout takes precedence. Keys tell
the layouts apart by depth (`loras/<id>/<file>` against `loras/<scope>/<id>/<file>`), so an
old id that equals a scope name is still read right. A ref without a '/' (what songs accepted
before scopes stored as their LoRA) is read as `shared/<id>`.

Weights are validated before they are stored, so a decoder never meets a file it cannot load:
safetensors only, a size limit, every key a module of the base model, rank within
`loras.max_rank`.

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
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .store import ObjectStore

logger = logging.getLogger("ray.serve")

LORA_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
LORA_ID_RULE = (
    "LoRA ids are 1-64 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit"
)
# Owner ids are `local`, `key_<hex>` or `own_<hex>` (serve.http.auth): no '/' and no '.'.
OWNER_SCOPE_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
SHARED_SCOPE = "shared"
LORA_WEIGHTS_NAME = "pytorch_lora_weights.safetensors"
LORA_META_NAME = "meta.json"
LORA_CACHE_DIR_NAME = "songserve-lora-cache"
_ROOT = "loras/"

LoraValidator = Callable[[bytes], dict[str, Any]]
"""Checks a weights file against the base model; returns {"rank", "keys", ...} or raises
ValueError saying what is wrong."""


def owner_scope(owner: str) -> str:
    """The scope of owner `owner`'s LoRAs: the owner id itself. ValueError for one that could be
    mistaken for the shared scope or break the key layout (none the server issues is)."""
    if owner == SHARED_SCOPE or not OWNER_SCOPE_PATTERN.match(owner):
        raise ValueError(f"owner id {owner!r} cannot name a LoRA scope")
    return owner


@dataclass(frozen=True)
class LoraRef:
    """A LoRA named across scopes; `str(ref)` is `<scope>/<id>`."""

    scope: str
    id: str

    @classmethod
    def shared(cls, lora_id: str) -> LoraRef:
        """The operator's LoRA `lora_id`."""
        return cls(SHARED_SCOPE, lora_id)

    @classmethod
    def owned(cls, owner: str, lora_id: str) -> LoraRef:
        """Owner `owner`'s LoRA `lora_id` (ValueError as `owner_scope`)."""
        return cls(owner_scope(owner), lora_id)

    @classmethod
    def parse(cls, ref: str) -> LoraRef:
        """A ref from its string; a bare id (songs accepted before scopes) is a shared LoRA.
        ValueError for anything else that is not a well-formed ref."""
        scope, slash, lora_id = ref.rpartition("/")
        if not slash:
            scope = SHARED_SCOPE
        if not OWNER_SCOPE_PATTERN.match(scope) or not LORA_ID_PATTERN.match(lora_id):
            raise ValueError(f"{ref!r} is not a LoRA ref (<scope>/<id>)")
        return cls(scope, lora_id)

    @property
    def is_shared(self) -> bool:
        return self.scope == SHARED_SCOPE

    def __str__(self) -> str:
        return f"{self.scope}/{self.id}"


def lora_key(ref: LoraRef, name: str = "", *, legacy: bool = False) -> str:
    """Object-store key of file `name` of LoRA `ref` (its folder, ending in '/', without one):
    `loras/<scope>/<id>/<name>`; `legacy`, the layout before scopes: `loras/<id>/<name>` (shared
    LoRAs only)."""
    if legacy:
        if not ref.is_shared:
            raise ValueError(f"only shared LoRAs have an old-layout key, not {ref}")
        return f"{_ROOT}{ref.id}/{name}"
    return f"{_scope_prefix(ref.scope)}{ref.id}/{name}"


def _scope_prefix(scope: str) -> str:
    """The folder of a scope's LoRAs (part of `lora_key`'s layout)."""
    return f"{_ROOT}{scope}/"


def lora_weights_key(ref: LoraRef, *, legacy: bool = False) -> str:
    """Object-store key of a registered LoRA's weights."""
    return lora_key(ref, LORA_WEIGHTS_NAME, legacy=legacy)


def _meta_location(key: str) -> tuple[LoraRef, bool] | None:
    """(ref, legacy) of the LoRA whose `meta.json` is at `key`; None for any other key. The
    inverse of `lora_key`."""
    parts = key.removeprefix(_ROOT).split("/")
    if parts[-1] != LORA_META_NAME:
        return None
    if len(parts) == 2 and LORA_ID_PATTERN.match(parts[0]):
        return LoraRef.shared(parts[0]), True
    if len(parts) == 3:
        with contextlib.suppress(ValueError):
            return LoraRef.parse(f"{parts[0]}/{parts[1]}"), False
    return None


@dataclass(frozen=True)
class LoraInfo:
    """A registered LoRA: what its `meta.json` holds, and where it was found (`scope`, and
    `legacy` for one stored in the old layout)."""

    id: str
    model: str
    rank: int
    size_bytes: int
    sha256: str
    created_at: float
    scope: str
    legacy: bool = False

    @property
    def ref(self) -> LoraRef:
        return LoraRef(self.scope, self.id)

    @property
    def weights_key(self) -> str:
        return lora_weights_key(self.ref, legacy=self.legacy)


# What meta.json holds; where a LoRA was found is known from its key.
_STORED_FIELDS = ("id", "model", "rank", "size_bytes", "sha256", "created_at")


class LoraRegistry:
    def __init__(self, objects: ObjectStore) -> None:
        self._objects = objects
        # Nothing writes the old layout any more: its ids are listed once per process.
        self._old_layout: list[str] | None = None

    async def register(
        self, ref: LoraRef, weights: bytes, *, model: str, validate: LoraValidator
    ) -> LoraInfo:
        """Validate and store a LoRA in scope `ref.scope` (replacing one with the same ref);
        raises ValueError."""
        if not LORA_ID_PATTERN.match(ref.id):
            raise ValueError(LORA_ID_RULE)
        # Loading the tensors and hashing hundreds of MB take seconds: off the event loop.
        report, digest = await asyncio.to_thread(
            lambda: (validate(weights), hashlib.sha256(weights).hexdigest())
        )
        info = LoraInfo(
            id=ref.id,
            model=model,
            rank=int(report["rank"]),
            size_bytes=len(weights),
            sha256=digest,
            created_at=time.time(),
            scope=ref.scope,
        )
        stored = {name: value for name, value in asdict(info).items() if name in _STORED_FIELDS}
        # Weights first: a listed LoRA always has its file.
        await self._objects.put(lora_weights_key(ref), weights, "application/octet-stream")
        await self._objects.put(
            lora_key(ref, LORA_META_NAME), json.dumps(stored).encode(), "application/json"
        )
        return info

    async def get(self, ref: LoraRef) -> LoraInfo | None:
        """The LoRA `ref` names; a shared one is looked for in the old layout too."""
        info = await self._read(ref, legacy=False)
        if info is None and ref.is_shared:
            info = await self._read(ref, legacy=True)
        return info

    async def resolve(self, owner: str, lora_id: str) -> LoraInfo | None:
        """What `lora_id` names for `owner`: their own LoRA, else a shared one, else None."""
        own = await self.get(LoraRef.owned(owner, lora_id))
        return own if own is not None else await self.get(LoraRef.shared(lora_id))

    async def usable_by(self, owner: str) -> list[LoraInfo]:
        """The LoRAs `owner` may use: their own, then the shared ones (never another owner's)."""
        return await self.in_scopes([owner_scope(owner), SHARED_SCOPE])

    async def in_scopes(self, scopes: Iterable[str]) -> list[LoraInfo]:
        """The LoRAs of `scopes`, each scope's sorted by id; `shared` includes the old layout's."""
        infos: list[LoraInfo] = []
        for scope in scopes:
            found = {ref.id: ref for ref in await self._refs(scope)}
            if scope == SHARED_SCOPE:
                for lora_id in await self._old_layout_ids():
                    found.setdefault(lora_id, LoraRef.shared(lora_id))
            for lora_id in sorted(found):
                info = await self.get(found[lora_id])
                if info is not None:
                    infos.append(info)
        return infos

    async def count(self, scope: str) -> int:
        """How many LoRAs scope `scope` holds in the scoped layout."""
        return len(await self._refs(scope))

    async def delete(self, ref: LoraRef) -> bool:
        """Delete LoRA `ref`; False when the scoped layout has none (old-layout LoRAs are never
        deleted here: they are the operator's)."""
        if await self._read(ref, legacy=False) is None:
            return False
        await self._objects.delete_prefix(lora_key(ref))
        return True

    async def _read(self, ref: LoraRef, *, legacy: bool) -> LoraInfo | None:
        if not LORA_ID_PATTERN.match(ref.id):  # an id from a URL must not wander the store
            return None
        try:
            stored = json.loads(
                await self._objects.get(lora_key(ref, LORA_META_NAME, legacy=legacy))
            )
        except KeyError:
            return None
        known = {name: stored[name] for name in _STORED_FIELDS}
        return LoraInfo(**{**known, "id": ref.id, "scope": ref.scope, "legacy": legacy})

    async def _refs(self, scope: str) -> list[LoraRef]:
        keys = await self._objects.list_keys(_scope_prefix(scope))
        located = (_meta_location(key) for key in keys)
        return [ref for ref, legacy in filter(None, located) if not legacy and ref.scope == scope]

    async def _old_layout_ids(self) -> list[str]:
        if self._old_layout is None:
            located = (_meta_location(key) for key in await self._objects.list_keys(_ROOT))
            self._old_layout = [ref.id for ref, legacy in filter(None, located) if legacy]
        return self._old_layout


def default_lora_cache_dir() -> Path:
    """Where a node keeps its LoRA copies: `songserve-lora-cache` in the system temp dir, one
    directory that every replica on the node (same user) shares."""
    return Path(tempfile.gettempdir()) / LORA_CACHE_DIR_NAME


class LoraCache:
    """Registered LoRA weights on this node's disk, shared by every replica on the node.

    A version lives at `<directory>/<scope>/<id>/<sha256>/pytorch_lora_weights.safetensors`,
    named by the registry's entry, so weights registered again under the same ref get a new path,
    never a stale hit (older versions of the ref are removed then). A copy is used only when its
    size and SHA-256 match the registry's (hashed once per process and file), so a truncated,
    damaged or planted file is fetched again, never loaded. Files are written to a temporary name
    and renamed into place (`os.replace`): no reader sees half a file. A fetch holds a lock file
    per LoRA (`flock`, released by the kernel if its holder dies), so replicas missing the same
    LoRA at once fetch it once: the others wait, then find the copy.
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

    async def path(self, ref: str) -> Path:
        """The local weights file of registered LoRA `ref` (`<scope>/<id>`, see `LoraRef`),
        fetched from the object store only when this node has no intact copy of its registered
        version.

        Raises KeyError when the ref names no registered LoRA, ValueError when the stored weights
        do not match their registry entry (registered again while being fetched: try again).
        """
        try:
            parsed = LoraRef.parse(ref)
        except ValueError as error:
            raise KeyError(f"LoRA {ref!r} is not registered (POST /v1/loras)") from error
        # Messages name the id, not the ref: a render's failure reaches the song's owner.
        missing = f"LoRA {parsed.id!r} is not registered (POST /v1/loras)"
        info = await self._registry.get(parsed)
        if info is None:
            raise KeyError(missing)
        target = self.directory / parsed.scope / parsed.id / info.sha256 / LORA_WEIGHTS_NAME
        if await asyncio.to_thread(self._intact, target, info):
            return target
        async with self._locked(target.parent.parent):
            # Another replica on this node may have fetched it while this one waited.
            if await asyncio.to_thread(self._intact, target, info):
                return target
            try:
                data = await self._objects.get(info.weights_key)
            except KeyError as error:
                raise KeyError(missing) from error
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
                f"LoRA {info.id!r}: the stored weights differ from its registry entry (it "
                "was registered again while this replica fetched it): try again"
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
        # Older versions of this LoRA are stale: the registry now names this one.
        for version in target.parent.parent.iterdir():
            if version.is_dir() and version != target.parent:
                shutil.rmtree(version, ignore_errors=True)

    @contextlib.asynccontextmanager
    async def _locked(self, lora_dir: Path) -> AsyncIterator[None]:
        """Hold this node's fetch lock of one LoRA (its folder `lora_dir`); polled without
        blocking, so waiting never ties up a thread and a cancelled wait leaves nothing locked."""
        lock_path = lora_dir / ".lock"

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
