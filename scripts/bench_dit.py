"""Decoder-pool benchmark on the tiny ACE-Step checkpoint (CPU here; the same script runs on GPUs).

Deploys the ACE-Step pool alone (the real `SongDecoder` deployment, no ingress or post-processing,
so nothing masks the model calls) and measures:

1. songs per minute at concurrency 1, 4 and 8 with batching on (max_batch_size 8) and off (1);
2. LoRA switch latency: a cold load from the object store vs a warm (cached) adapter vs base;
3. the multiplexing hit ratio under Zipf(1.1) traffic over 8 LoRAs and 2 replicas;
4. serving overhead: the deployment vs calling the model directly on the same batch.

    python scripts/bench_dit.py [--checkpoint var/tiny-acestep] [--duration 10] [--songs 24]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from deployments.renders import RenderedSong  # noqa: E402
from pipeline.lyrics import parse_lyrics  # noqa: E402
from pipeline.song_models import RenderRequest  # noqa: E402
from pipeline.tags import normalize_style  # noqa: E402
from serve.config import DecoderPoolConfig, StorageConfig  # noqa: E402

# Traffic of different songs: each request takes the next style (its own caption, bpm and key),
# so a batch mixes conditioning as real traffic does.
STYLES = [
    normalize_style(style)
    for style in (
        "synthwave, dreamy, female vocals",
        "lofi hip hop, chill, rainy",
        "deep house, groovy, late night",
        "indie folk, warm, acoustic guitar",
    )
]
SECTIONS = parse_lyrics("[verse]\nneon lights over the bay\n[chorus]\nwe drive all night")


def _request(seed: int, duration_s: float, lora_id: str | None = None) -> RenderRequest:
    return RenderRequest(
        job_id="bench",
        variation=0,
        seed=seed,
        duration_s=duration_s,
        tags=STYLES[seed % len(STYLES)],
        sections=SECTIONS,
        instrumental=False,
        language="en",
        lora_id=lora_id,
    )


def _pool(checkpoint: Path, max_batch_size: int, replicas: int = 1) -> DecoderPoolConfig:
    return DecoderPoolConfig.model_validate(
        {
            "name": "DiT_Bench",
            "model": "ace-step",
            "ace_step": {"path": str(checkpoint), "device": "auto", "lora_cache_size": 4},
            "batching": {"max_batch_size": max_batch_size, "batch_wait_timeout_s": 0.05},
            "deployment": {
                "num_replicas": replicas,
                "max_ongoing_requests": 16,
                "actor": {"num_cpus": 0.5},
            },
        }
    )


def _deploy(pool: DecoderPoolConfig, storage: StorageConfig) -> Any:
    from ray import serve

    from serve.app import decoder_deployment

    return serve.run(decoder_deployment(pool, storage), name="bench-dit", route_prefix=None)


async def _render(handle: Any, request: RenderRequest) -> RenderedSong:
    options: dict[str, Any] = {"stream": True}
    if request.lora_id:
        options["multiplexed_model_id"] = request.lora_id
    song = None
    async for item in handle.options(**options).render.remote(request):
        if isinstance(item, RenderedSong):
            song = item
    assert song is not None
    return song


async def _throughput(
    handle: Any, concurrency: int, songs: int, duration_s: float
) -> tuple[float, float]:
    """(songs per minute, mean batch size) with `concurrency` requests in flight."""
    queue = list(range(songs))
    batch_sizes: list[int] = []

    async def worker() -> None:
        while queue:
            seed = queue.pop()
            batch_sizes.append((await _render(handle, _request(seed, duration_s))).batch_size)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return 60 * songs / (time.perf_counter() - started), statistics.mean(batch_sizes)


def _register_loras(checkpoint: Path, storage: StorageConfig, count: int) -> list[str]:
    """`count` shared LoRAs, seeded perturbations of tiny-a; returns their refs (what decoders
    load LoRAs by)."""
    from safetensors.numpy import load_file, save_file

    from pipeline.engines.ace_step_lora import lora_validator
    from serve.loras import LoraRef, LoraRegistry
    from serve.store import open_object_store

    registry = LoraRegistry(open_object_store(storage))
    validate = lora_validator(checkpoint, max_rank=64)
    base = load_file(checkpoint / "loras/tiny-a/pytorch_lora_weights.safetensors")
    refs = []
    for k in range(count):
        rng = np.random.default_rng(k)
        tensors = {
            n: (t + 0.1 * rng.standard_normal(t.shape)).astype(t.dtype) for n, t in base.items()
        }
        path = Path(tempfile.mkdtemp()) / "w.safetensors"
        save_file(tensors, str(path))
        ref = LoraRef.shared(f"bench-{k}")
        asyncio.run(registry.register(ref, path.read_bytes(), model="ace-step", validate=validate))
        refs.append(str(ref))
    return refs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="var/tiny-acestep")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--songs", type=int, default=24)
    parser.add_argument("--zipf-requests", type=int, default=120)
    options = parser.parse_args()

    import ray
    from ray import serve

    from pipeline.tiny.acestep import build_tiny_acestep

    checkpoint = build_tiny_acestep(Path(options.checkpoint))
    storage = StorageConfig(data_dir=tempfile.mkdtemp(prefix="bench-dit-")).resolved()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address="local", include_dashboard=False, num_cpus=4)
    rows: list[tuple[str, str]] = []

    # 1. Throughput, batching on and off; 4. the batch of 4 through the one-replica deployment.
    # Seeds 0, 4, 8, 12 share a style, so the batch is one model call.
    batch = [_request(len(STYLES) * k, options.duration) for k in range(4)]
    for max_batch_size in (1, 8):
        handle = _deploy(_pool(checkpoint, max_batch_size), storage)
        rows += asyncio.run(_throughput_rows(handle, max_batch_size, options))
        if max_batch_size > 1:
            served_s = asyncio.run(_served_batch_s(handle, batch))
        serve.delete("bench-dit")

    # 2 + 3. LoRA switch latency and multiplex hit ratio (2 replicas, 4 adapters cached each);
    # 4. serving overhead on the same deployment.
    lora_ids = _register_loras(checkpoint, storage, 8)
    handle = _deploy(_pool(checkpoint, 8, replicas=2), storage)
    rows += asyncio.run(_lora_rows(handle, lora_ids, options))
    # 4. Serving overhead: the same batch of 4 through the deployment vs the model directly.
    from pipeline.engines.ace_step import AceStepSongModel

    serve.shutdown()
    ray.shutdown()
    model = AceStepSongModel(_pool(checkpoint, 8))
    direct = []
    for _ in range(3):
        started = time.perf_counter()
        model.render(batch, lambda step, steps: None)
        direct.append(time.perf_counter() - started)
    direct_s = statistics.median(direct)
    rows.append(("batch of 4 through the deployment (1 replica)", f"{served_s * 1000:.0f} ms"))
    rows.append(("same batch, model called directly", f"{direct_s * 1000:.0f} ms"))
    rows.append(("serving overhead", f"{(served_s - direct_s) * 1000:.0f} ms"))

    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    print(f"# bench_dit — {datetime.now(UTC):%Y-%m-%d} — {machine} — {model.version}")
    print(f"{options.duration:g} s songs, 8 steps, device {model.device}\n")
    print("| measure | result |\n|---|---:|")
    for label, value in rows:
        print(f"| {label} | {value} |")
    return 0


async def _throughput_rows(
    handle: Any, max_batch_size: int, options: argparse.Namespace
) -> list[tuple[str, str]]:
    await _render(handle, _request(0, options.duration))  # warm-up
    rows = []
    for concurrency in (1, 4, 8):
        per_minute, mean_batch = await _throughput(
            handle, concurrency, options.songs, options.duration
        )
        mode = "on (8)" if max_batch_size > 1 else "off"
        rows.append(
            (
                f"songs/min, batching {mode}, concurrency {concurrency}",
                f"{per_minute:.0f} (mean batch {mean_batch:.1f})",
            )
        )
    return rows


async def _served_batch_s(handle: Any, batch: list[RenderRequest]) -> float:
    """Median wall time of `batch` sent at once (it forms one model call)."""
    served = []
    for _ in range(3):
        started = time.perf_counter()
        batch_sizes = [
            s.batch_size for s in await asyncio.gather(*(_render(handle, r) for r in batch))
        ]
        served.append(time.perf_counter() - started)
        assert batch_sizes == [len(batch)] * len(batch), batch_sizes
    return statistics.median(served)


async def _lora_rows(
    handle: Any, lora_ids: list[str], options: argparse.Namespace
) -> list[tuple[str, str]]:
    async def timed(request: RenderRequest) -> float:
        started = time.perf_counter()
        await _render(handle, request)
        return time.perf_counter() - started

    duration = options.duration
    await timed(_request(0, duration))  # warm-up
    base_s = statistics.median([await timed(_request(1, duration)) for _ in range(3)])
    cold_s = await timed(_request(1, duration, lora_ids[0]))
    warm_s = statistics.median([await timed(_request(1, duration, lora_ids[0])) for _ in range(3)])
    rows = [
        ("base request latency (no LoRA)", f"{base_s * 1000:.0f} ms"),
        ("LoRA request, cold (fetch from store + load)", f"{cold_s * 1000:.0f} ms"),
        ("LoRA request, warm (adapter cached)", f"{warm_s * 1000:.0f} ms"),
    ]

    before = await _pool_stats(handle)
    rng = np.random.default_rng(7)
    ranks = np.minimum(rng.zipf(1.1, options.zipf_requests), len(lora_ids)) - 1
    semaphore = asyncio.Semaphore(4)

    async def one(k: int, lora: int) -> None:
        async with semaphore:
            await _render(handle, _request(k, duration, lora_ids[lora]))

    await asyncio.gather(*(one(k, int(lora)) for k, lora in enumerate(ranks)))
    after = await _pool_stats(handle)
    loads = sum(s["lora_loads"] for s in after.values()) - sum(
        s["lora_loads"] for s in before.values()
    )
    rows.append(
        (
            f"multiplex hit ratio, Zipf(1.1) over {len(lora_ids)} LoRAs, 2 replicas x 4 cached, "
            f"{options.zipf_requests} requests",
            f"{1 - loads / options.zipf_requests:.2f} ({loads} loads)",
        )
    )
    return rows


async def _pool_stats(handle: Any) -> dict[str, dict[str, Any]]:
    """Counters of every replica, by replica (asks until both replicas have answered)."""
    seen: dict[str, dict[str, Any]] = {}
    for _ in range(50):
        stats = await handle.stats.remote()
        seen[stats["replica"]] = stats
        if len(seen) == 2:
            break
    return seen


if __name__ == "__main__":
    sys.exit(main())
