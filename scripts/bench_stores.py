"""Store benchmark: what push (LISTEN/NOTIFY) and bytes-by-reference buy.

1. Idle SSE subscribers: `--subscribers` streams (the API's own SSE generator, `EventStreams.
   event_stream`) on running songs that log nothing, for `--window-s`; counts the job-store
   queries they cost on Postgres (LISTEN/NOTIFY: the store's statement counter) and on SQLite
   (one poll of the database's version per store, shared by every waiter: every statement,
   through sqlite3's trace callback).
2. Event-commit → SSE-frame latency: with those streams open, events are appended from another
   store instance; each frame's arrival is timed against the moment the append committed.
3. Bytes a coordination replica receives per song (30 s, 2 variations, 48 kHz stereo): the
   pickled size of every message the router and the conductor receive, before (the render's
   audio travelled decoder → router → conductor → post-processor) and after (a reference).

Starts a throwaway PostgreSQL (initdb/pg_ctl) in a temp dir; needs no Ray.

    python scripts/bench_stores.py [--subscribers 200] [--window-s 10] [--queued] [--markdown]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pickle
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from serve.config import AppConfig, resolve_config  # noqa: E402
from serve.services import ApiServices, build_services  # noqa: E402
from serve.store import JobStore, open_job_store  # noqa: E402

OWNER = "local"  # loopback callers' owner id when no API keys are configured
SONGS = 20


class QueryCounter:
    """Statements a job store ran: Postgres counts its own; SQLite's are traced."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self._sqlite = 0
        if hasattr(store, "queries"):
            return

        def trace(_: str) -> None:
            self._sqlite += 1

        connection: sqlite3.Connection = store._connection
        # sqlite3 objects belong to the thread that made them: the store's own thread.
        store._executor.submit(connection.set_trace_callback, trace).result()

    @property
    def count(self) -> int:
        return int(getattr(self._store, "queries", self._sqlite))


async def _subscribe(
    api: ApiServices, song_id: str, after: int, frames: list[tuple[str, float]]
) -> None:
    stream = await api.events.open(song_id, OWNER, after)
    async for frame in stream:
        if frame.startswith("id:"):
            frames.append((song_id, time.perf_counter()))


async def measure(
    config: AppConfig, subscribers: int, window_s: float, events: int, queued: bool = False
) -> dict[str, float]:
    api = build_services(config, graph=None)  # type: ignore[arg-type]  # streams need no graph
    writer: JobStore = open_job_store(config.storage)
    songs = []
    for _ in range(SONGS):
        job, _ = await writer.create_job(
            owner=OWNER, request={"prompt": "bench"}, seed=1, variations=1
        )
        songs.append(job.id)
    # Running songs that log nothing for a while (a long render), as a conductor holds them;
    # with `queued`, songs waiting in line, whose streams also read their place every second.
    for _ in songs if not queued else []:
        await writer.claim_next("bench-conductor", lease_s=600, max_attempts=3)
    frames: list[tuple[str, float]] = []
    streams = [
        asyncio.create_task(_subscribe(api, songs[k % SONGS], 1, frames))
        for k in range(subscribers)
    ]
    await asyncio.sleep(2.0)  # every stream has read its backlog and is idle
    counter = QueryCounter(api.jobs)
    before = counter.count
    await asyncio.sleep(window_s)
    idle_qps = (counter.count - before) / window_s

    latencies: list[float] = []
    per_song = subscribers / SONGS
    for k in range(events):
        song_id = songs[k % SONGS]
        seen = len(frames)
        await writer.append_event(song_id, "progress", {"step": k})
        committed = time.perf_counter()
        deadline = committed + 5.0
        while len(frames) < seen + per_song and time.perf_counter() < deadline:
            await asyncio.sleep(0.0005)
        latencies.extend(t - committed for s, t in frames[seen:] if s == song_id)
        await asyncio.sleep(0.05)
    for stream in streams:
        stream.cancel()
    await asyncio.gather(*streams, return_exceptions=True)
    await writer.close()
    await api.jobs.close()
    latencies.sort()
    return {
        "idle_queries_per_s": idle_qps,
        "latency_median_ms": 1000 * statistics.median(latencies),
        "latency_p95_ms": 1000 * latencies[int(0.95 * (len(latencies) - 1))],
        "frames": len(latencies),
    }


def message_bytes(duration_s: float = 30.0, variations: int = 2) -> dict[str, dict[str, int]]:
    """Pickled bytes the router and the conductor receive for one song, before and after."""
    import numpy as np

    from deployments.lyrics_llm import WrittenLyrics
    from deployments.post_processor import ProcessedVariation
    from deployments.renders import RenderedSong, RenderProgress
    from pipeline.tags import StyleTags

    steps = 8  # progress reports per render (ACE-Step turbo; sketch reports per section)
    now = time.time()
    common = {
        "sample_rate": 48_000,
        "model": "ace-step",
        "model_version": "v15-xl-turbo",
        "replica": "DiT_CUDA@gpu-node-1:12345",
        "render_started_at": now,
        "render_finished_at": now,
        "batch_size": 2,
    }
    n_samples = int(duration_s * 48_000)
    reference = RenderedSong(render_key="songs/song_x/v0/render.npy", n_samples=n_samples, **common)
    audio = np.zeros((2, n_samples), dtype=np.float32)
    # Before: the same message carried the audio itself.
    with_audio = {"audio": audio, **common}
    progress = sum(len(pickle.dumps(RenderProgress(k, steps))) for k in range(1, steps + 1))
    processed = ProcessedVariation(
        duration_s=duration_s,
        sample_rate=48_000,
        loudness_lufs=-14.0,
        true_peak_dbtp=-1.0,
        objects={k: f"songs/song_x/v0/{k}" for k in ("m4a", "mp3", "flac", "wav", "peaks", "hls")},
        timings_s={k: 0.1 for k in ("loudness", "watermark", "encode_m4a", "c2pa", "store")},
        provenance={"watermark": {"embedded": True}, "c2pa": {"signed": True}},
        fingerprint=[0.1] * 64,
    )
    lyrics = len(pickle.dumps(WrittenLyrics("[verse]\n" + "la " * 200, [], "template", "t")))
    tags = len(pickle.dumps(StyleTags(genre="pop", subgenre=None, family="pop")))
    result: dict[str, dict[str, int]] = {}
    for name, render in (("before", with_audio), ("after", reference)):
        render_bytes = len(pickle.dumps(render))
        router = variations * (progress + render_bytes)  # from the decoders
        conductor = router + variations * len(pickle.dumps(processed)) + lyrics + tags
        result[name] = {"router": router, "conductor": conductor}
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=200)
    parser.add_argument("--window-s", type=float, default=10.0)
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument(
        "--queued",
        action="store_true",
        help="streams on queued songs (each reads its place in line every second)",
    )
    parser.add_argument("--markdown", action="store_true")
    options = parser.parse_args()

    from serve.local_services import LocalPostgres

    work = Path(tempfile.mkdtemp(prefix="songserve-bench-stores-"))
    work.chmod(0o755)  # the server runs as the postgres user
    postgres = LocalPostgres(work / "postgres")
    postgres.start()
    try:
        results = {}
        for name, storage in (
            ("SQLite (one shared poll)", {"data_dir": str(work / "sqlite")}),
            (
                "Postgres (LISTEN/NOTIFY)",
                {"data_dir": str(work), "database_url": postgres.create_database("bench")},
            ),
        ):
            config = resolve_config({"storage": storage})
            results[name] = asyncio.run(
                measure(
                    config, options.subscribers, options.window_s, options.events, options.queued
                )
            )
    finally:
        postgres.stop()
    sizes = message_bytes()

    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    print(f"# bench_stores — {datetime.now(UTC):%Y-%m-%d} — {machine}")
    print(
        f"{options.subscribers} idle SSE streams on {SONGS} "
        f"{'queued' if options.queued else 'running'} songs for {options.window_s:g} s; "
        f"then {options.events} events appended from another store instance"
    )
    print("\n| job store | queries/s, idle streams | commit → SSE frame median | p95 |")
    print("|---|---:|---:|---:|")
    for name, r in results.items():
        print(
            f"| {name} | {r['idle_queries_per_s']:.1f} | {r['latency_median_ms']:.1f} ms "
            f"| {r['latency_p95_ms']:.1f} ms |"
        )
    print(
        "\n| bytes received per 30 s × 2 song | before (audio in messages) | after (references) |"
    )
    print("|---|---:|---:|")
    for replica in ("router", "conductor"):
        print(f"| {replica} | {sizes['before'][replica]:,} | {sizes['after'][replica]:,} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
