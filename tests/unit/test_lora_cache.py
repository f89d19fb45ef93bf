"""LoraCache: one copy of each registered LoRA per node, shared by the node's replicas, fetched
from the object store only when no intact copy of the registered version is on disk."""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from serve.loras import LORA_WEIGHTS_NAME, LoraCache, LoraRegistry, lora_weights_key
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


def _register(store: CountingStore, lora_id: str, weights: bytes) -> None:
    def validate(_: bytes) -> dict[str, Any]:
        return {"rank": 4}

    asyncio.run(LoraRegistry(store).register(lora_id, weights, model="ace-step", validate=validate))


@pytest.fixture
def store(tmp_path: Path) -> CountingStore:
    return CountingStore(tmp_path / "objects")


def test_replicas_on_one_node_fetch_a_lora_once(store: CountingStore, tmp_path: Path) -> None:
    weights = _weights(1)
    _register(store, "my-style", weights)
    node_dir = tmp_path / "node-cache"
    first, second = LoraCache(store, node_dir), LoraCache(store, node_dir)  # two replicas

    path = asyncio.run(first.path("my-style"))
    assert path.name == LORA_WEIGHTS_NAME and path.read_bytes() == weights
    assert asyncio.run(second.path("my-style")) == path  # the other replica reuses the copy
    assert asyncio.run(first.path("my-style")) == path  # a reload after an eviction too
    assert store.gets[lora_weights_key("my-style")] == 1
    assert (first.fetches, second.fetches) == (1, 0)
    # Nothing half-written is left beside it.
    assert sorted(p.name for p in path.parent.iterdir()) == [LORA_WEIGHTS_NAME]
    assert os.stat(node_dir).st_mode & 0o777 == 0o700


def test_concurrent_misses_on_one_node_fetch_once(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "objects", delay_s=0.2)
    _register(store, "slow", _weights(2))
    caches = [LoraCache(store, tmp_path / "node-cache", poll_s=0.01) for _ in range(3)]

    async def all_at_once() -> list[Path]:
        return list(await asyncio.gather(*(cache.path("slow") for cache in caches)))

    paths = asyncio.run(all_at_once())
    assert len(set(paths)) == 1
    assert store.gets[lora_weights_key("slow")] == 1


@pytest.mark.parametrize("damage", ["truncated", "same size, other bytes"])
def test_a_damaged_copy_is_fetched_again(store: CountingStore, tmp_path: Path, damage: str) -> None:
    weights = _weights(3)
    _register(store, "fragile", weights)
    path = asyncio.run(LoraCache(store, tmp_path / "c").path("fragile"))
    if damage == "truncated":
        path.write_bytes(weights[:100])
    else:
        path.write_bytes(bytes(b ^ 0xFF for b in weights))
    # A replica started later (nothing verified in its memory) checks size and SHA-256.
    assert asyncio.run(LoraCache(store, tmp_path / "c").path("fragile")).read_bytes() == weights
    assert store.gets[lora_weights_key("fragile")] == 2


def test_registering_again_gets_a_new_version_and_drops_the_old(
    store: CountingStore, tmp_path: Path
) -> None:
    cache = LoraCache(store, tmp_path / "c")
    _register(store, "evolving", _weights(4))
    old = asyncio.run(cache.path("evolving"))
    _register(store, "evolving", _weights(5, size=5000))
    new = asyncio.run(cache.path("evolving"))
    assert new != old and new.read_bytes() == _weights(5, size=5000)
    assert not old.parent.exists()
    assert store.gets[lora_weights_key("evolving")] == 2


def test_an_unregistered_lora_is_a_key_error(store: CountingStore, tmp_path: Path) -> None:
    with pytest.raises(KeyError, match=r"LoRA 'nope' is not registered \(POST /v1/loras\)"):
        asyncio.run(LoraCache(store, tmp_path / "c").path("nope"))
    assert store.gets[lora_weights_key("nope")] == 0


def test_weights_that_differ_from_their_entry_are_never_cached(
    store: CountingStore, tmp_path: Path
) -> None:
    _register(store, "raced", _weights(6))
    # The weights were replaced under the entry (as a concurrent registration would).
    asyncio.run(store.put(lora_weights_key("raced"), _weights(7), "application/octet-stream"))
    cache = LoraCache(store, tmp_path / "c")
    with pytest.raises(ValueError, match="differ from its registry entry"):
        asyncio.run(cache.path("raced"))
    assert not list((tmp_path / "c" / "raced").glob("*/*"))


def test_an_unwritable_cache_directory_falls_back_to_a_private_one(
    store: CountingStore, tmp_path: Path
) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    cache = LoraCache(store, not_a_dir / "cache")
    assert cache.directory != not_a_dir / "cache" and cache.directory.is_dir()
    _register(store, "ok", _weights(8))
    assert asyncio.run(cache.path("ok")).read_bytes() == _weights(8)
