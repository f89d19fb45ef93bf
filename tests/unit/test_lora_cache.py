"""LoraCache: one copy of each registered LoRA per node, shared by the node's replicas, fetched
from the object store only when no intact copy of the registered version is on disk."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from serve.loras import LORA_WEIGHTS_NAME, LoraCache, LoraRef, LoraRegistry, lora_weights_key
from serve.store.files import FilesystemObjectStore


class CountingStore(FilesystemObjectStore):
    """A real file object store that counts `get`s per key (and can be slow, like a network)."""

    def __init__(self, root: Path, delay_s: float = 0.0) -> None:
        super().__init__(root)
        self.gets: Counter[str] = Counter()
        self.delay_s = delay_s

    async def get(self, key: str) -> bytes:
        self.gets[key] += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return await super().get(key)


def _weights(seed: int, size: int = 4096) -> bytes:
    return bytes((seed * 31 + i * 7) % 256 for i in range(size))


def _validate(_: bytes) -> dict[str, Any]:
    return {"rank": 4}


def _register(store: CountingStore, ref: str, weights: bytes) -> None:
    """Register `weights` as LoRA `ref` ("<scope>/<id>")."""
    parsed = LoraRef.parse(ref)
    asyncio.run(LoraRegistry(store).register(parsed, weights, model="ace-step", validate=_validate))


def _key(ref: str) -> str:
    return lora_weights_key(LoraRef.parse(ref))


@pytest.fixture
def store(tmp_path: Path) -> CountingStore:
    return CountingStore(tmp_path / "objects")


def test_replicas_on_one_node_fetch_a_lora_once(store: CountingStore, tmp_path: Path) -> None:
    weights = _weights(1)
    _register(store, "own_a/my-style", weights)
    node_dir = tmp_path / "node-cache"
    first, second = LoraCache(store, node_dir), LoraCache(store, node_dir)  # two replicas

    path = asyncio.run(first.path("own_a/my-style"))
    assert path.name == LORA_WEIGHTS_NAME and path.read_bytes() == weights
    assert asyncio.run(second.path("own_a/my-style")) == path  # the other replica reuses the copy
    assert asyncio.run(first.path("own_a/my-style")) == path  # a reload after an eviction too
    assert store.gets[_key("own_a/my-style")] == 1
    assert (first.fetches, second.fetches) == (1, 0)
    # Nothing half-written is left beside it.
    assert sorted(p.name for p in path.parent.iterdir()) == [LORA_WEIGHTS_NAME]
    assert os.stat(node_dir).st_mode & 0o777 == 0o700


def test_concurrent_misses_on_one_node_fetch_once(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "objects", delay_s=0.2)
    _register(store, "own_a/slow", _weights(2))
    caches = [LoraCache(store, tmp_path / "node-cache", poll_s=0.01) for _ in range(3)]

    async def all_at_once() -> list[Path]:
        return list(await asyncio.gather(*(cache.path("own_a/slow") for cache in caches)))

    paths = asyncio.run(all_at_once())
    assert len(set(paths)) == 1
    assert store.gets[_key("own_a/slow")] == 1


@pytest.mark.parametrize("damage", ["truncated", "same size, other bytes"])
def test_a_damaged_copy_is_fetched_again(store: CountingStore, tmp_path: Path, damage: str) -> None:
    weights = _weights(3)
    _register(store, "own_a/fragile", weights)
    path = asyncio.run(LoraCache(store, tmp_path / "c").path("own_a/fragile"))
    if damage == "truncated":
        path.write_bytes(weights[:100])
    else:
        path.write_bytes(bytes(b ^ 0xFF for b in weights))
    # A replica started later (nothing verified in its memory) checks size and SHA-256.
    assert (
        asyncio.run(LoraCache(store, tmp_path / "c").path("own_a/fragile")).read_bytes() == weights
    )
    assert store.gets[_key("own_a/fragile")] == 2


def test_registering_again_gets_a_new_version_and_drops_the_old(
    store: CountingStore, tmp_path: Path
) -> None:
    cache = LoraCache(store, tmp_path / "c")
    _register(store, "own_a/evolving", _weights(4))
    old = asyncio.run(cache.path("own_a/evolving"))
    _register(store, "own_a/evolving", _weights(5, size=5000))
    new = asyncio.run(cache.path("own_a/evolving"))
    assert new != old and new.read_bytes() == _weights(5, size=5000)
    assert not old.parent.exists()
    assert store.gets[_key("own_a/evolving")] == 2


def test_an_unregistered_lora_is_a_key_error(store: CountingStore, tmp_path: Path) -> None:
    with pytest.raises(KeyError, match=r"LoRA 'nope' is not registered \(POST /v1/loras\)"):
        asyncio.run(LoraCache(store, tmp_path / "c").path("nope"))
    assert not any(key.endswith(LORA_WEIGHTS_NAME) for key in store.gets)


@pytest.mark.parametrize("ref", ["../nope", "own_a/b/nope", "own_a/Nope!", "own.a/nope", ""])
def test_a_malformed_ref_is_a_key_error(store: CountingStore, tmp_path: Path, ref: str) -> None:
    with pytest.raises(KeyError, match="is not registered"):
        asyncio.run(LoraCache(store, tmp_path / "c").path(ref))
    assert not store.gets


def test_two_owners_loras_of_one_id_stay_apart(store: CountingStore, tmp_path: Path) -> None:
    _register(store, "own_a/style", _weights(9))
    _register(store, "own_b/style", _weights(10))
    cache = LoraCache(store, tmp_path / "c")
    path_a = asyncio.run(cache.path("own_a/style"))
    path_b = asyncio.run(cache.path("own_b/style"))
    assert path_a != path_b
    assert (path_a.read_bytes(), path_b.read_bytes()) == (_weights(9), _weights(10))


def test_a_lora_of_the_old_layout_loads_as_shared(store: CountingStore, tmp_path: Path) -> None:
    # As the registry stored LoRAs before scopes: `loras/<id>/`, meta.json beside the weights.
    weights = _weights(11)
    meta = {
        "id": "old-style",
        "model": "ace-step",
        "rank": 4,
        "size_bytes": len(weights),
        "sha256": hashlib.sha256(weights).hexdigest(),
        "created_at": 1.0,
    }
    old_key = f"loras/old-style/{LORA_WEIGHTS_NAME}"
    asyncio.run(store.put(old_key, weights, "application/octet-stream"))
    asyncio.run(store.put("loras/old-style/meta.json", json.dumps(meta).encode(), "x/json"))
    cache = LoraCache(store, tmp_path / "c")
    # A song accepted before scopes names it by id; one accepted since, by its shared ref.
    by_id = asyncio.run(cache.path("old-style"))
    by_ref = asyncio.run(cache.path("shared/old-style"))
    assert by_id == by_ref and by_id.read_bytes() == weights
    assert store.gets[old_key] == 1
    with pytest.raises(KeyError):  # it is nobody's own LoRA
        asyncio.run(cache.path("own_a/old-style"))


def test_weights_that_differ_from_their_entry_are_never_cached(
    store: CountingStore, tmp_path: Path
) -> None:
    _register(store, "own_a/raced", _weights(6))
    # The weights were replaced under the entry (as a concurrent registration would).
    asyncio.run(store.put(_key("own_a/raced"), _weights(7), "application/octet-stream"))
    cache = LoraCache(store, tmp_path / "c")
    with pytest.raises(ValueError, match="differ from its registry entry"):
        asyncio.run(cache.path("own_a/raced"))
    assert not list((tmp_path / "c" / "own_a" / "raced").glob("*/*"))


def test_an_unwritable_cache_directory_falls_back_to_a_private_one(
    store: CountingStore, tmp_path: Path
) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    cache = LoraCache(store, not_a_dir / "cache")
    assert cache.directory != not_a_dir / "cache" and cache.directory.is_dir()
    _register(store, "own_a/ok", _weights(8))
    assert asyncio.run(cache.path("own_a/ok")).read_bytes() == _weights(8)
