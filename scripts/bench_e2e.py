"""End-to-end benchmark: a 30 s, 2-variation song on a running songserve graph.

Starts Ray and the app from a Serve config file in this process (HTTP on a free loopback port and a
private data dir), makes one warm-up song, then times `--runs` songs from `POST /v1/songs` to the
`done` event on the SSE stream. It splits each song's wall time into stages from the job store's
event log and the renders' own timings, and reports serving overhead: wall time minus the compute
on the critical path (lyrics + tags + the slowest variation's render + post-processing).

    python scripts/bench_e2e.py --config config/local.yaml [--runs 5] [--markdown]
        [--stores services]   # Postgres + S3 (SeaweedFS) started for the run, instead of the
                              # config's stores (SQLite + files in config/local.yaml)
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

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from serve.config import (  # noqa: E402
    app_args_from_serve_config,
    load_serve_config,
    resolve_config,
)
from serve.store import JobStore, open_job_store  # noqa: E402
from tests.helpers import free_port, read_events  # noqa: E402

PROMPT = "a sunny indie-pop song about sailing home"


def _stage_times(events: list[Any]) -> dict[str, float]:
    """First time each stage event was recorded, plus `done`."""
    times: dict[str, float] = {}
    for event in events:
        if event.type == "stage":
            times.setdefault(event.data["stage"], event.created_at)
        elif event.type == "done":
            times["done"] = event.created_at
    return times


def _text_stage_compute_s(duration_s: float) -> tuple[float, float]:
    """Compute time of the lyrics and tags engines alone, in this process (median of 20)."""
    from pipeline.lyrics import write_template_lyrics
    from pipeline.tags import normalize_style

    def timed(fn: Any) -> float:
        samples = []
        for _ in range(20):
            started = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - started)
        return statistics.median(samples)

    return (
        timed(lambda: write_template_lyrics(PROMPT, duration_s, seed=1)),
        timed(lambda: normalize_style(PROMPT)),
    )


def run_song(client: httpx.Client, store: JobStore, body: dict[str, Any]) -> dict[str, float]:
    started = time.time()
    song_id = client.post("/v1/songs", json=body).json()["id"]
    events = read_events(client, song_id, timeout_s=300)
    wall_s = time.time() - started
    assert events[-1][1] == "done", events[-1]
    job = asyncio.run(store.get_job(song_id))
    log = asyncio.run(store.events_after(song_id, 0))
    assert job is not None
    stages = _stage_times(log)
    renders = [v.render for v in job.variations]
    render_s = [r["render_finished_at"] - r["render_started_at"] for r in renders]
    postprocess_s = [sum(r["postprocess_s"].values()) for r in renders]
    return {
        "wall_s": wall_s,
        "queued_to_claimed_s": stages["lyrics"] - stages["queued"],
        "lyrics_s": stages["tags"] - stages["lyrics"],
        "tags_s": stages["generating"] - stages["tags"],
        "generate_and_store_s": stages["done"] - stages["generating"],
        "render_s": max(render_s),
        "postprocess_s": max(postprocess_s),
        "critical_path_compute_s": max(r + p for r, p in zip(render_s, postprocess_s, strict=True)),
        "loudness_s": max(r["postprocess_s"]["loudness"] for r in renders),
        "encode_s": max(
            sum(v for k, v in r["postprocess_s"].items() if k.startswith("encode_"))
            for r in renders
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config/local.yaml")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--variations", type=int, default=2)
    parser.add_argument("--markdown", action="store_true", help="print a docs/benchmarks.md table")
    parser.add_argument(
        "--stores",
        choices=("config", "services"),
        default="config",
        help="services: run on a throwaway Postgres + SeaweedFS (songserve services up)",
    )
    options = parser.parse_args()

    import ray
    from ray import serve

    from serve.app import build_app

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    data_dir = Path(tempfile.mkdtemp(prefix="songserve-bench-"))
    args = app_args_from_serve_config(load_serve_config(options.config))
    args.setdefault("storage", {})["data_dir"] = str(data_dir)
    if options.stores == "services":
        from serve.local_services import start_services

        data_dir.chmod(0o755)  # PostgreSQL runs as the postgres user
        os.environ.update(start_services(data_dir / "services"))  # read by resolve_config
    port = free_port()
    cluster_started = time.perf_counter()
    ray.init(include_dashboard=False, address="local")
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(args), name="songserve", route_prefix="/")
    startup_s = time.perf_counter() - cluster_started

    store = open_job_store(resolve_config(args).storage)
    body = {"prompt": PROMPT, "duration_s": options.duration, "variations": options.variations}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        run_song(client, store, {**body, "seed": 0})  # warm-up: first calls import and JIT
        results = [run_song(client, store, {**body, "seed": 100 + k}) for k in range(options.runs)]
    lyrics_compute_s, tags_compute_s = _text_stage_compute_s(options.duration)
    serve.shutdown()
    ray.shutdown()
    if options.stores == "services":
        from serve.local_services import stop_services

        stop_services(data_dir / "services")

    keys = list(results[0])
    median = {k: statistics.median(r[k] for r in results) for k in keys}
    overhead = (
        median["wall_s"] - median["critical_path_compute_s"] - lyrics_compute_s - tags_compute_s
    )
    storage = resolve_config(args).storage
    store_names = f"{storage.database_url.split(':')[0]} + {storage.storage_url.split(':')[0]}"
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    print(f"# bench_e2e — {datetime.now(UTC):%Y-%m-%d} — {machine}")
    print(
        f"config {options.config}, stores {store_names}; {options.duration:g} s song, "
        f"{options.variations} variations; "
        f"median of {options.runs} runs after one warm-up; cluster start-up {startup_s:.1f} s"
    )
    rows = [
        ("end-to-end wall time (POST → done event)", median["wall_s"]),
        ("  queued → claimed by a conductor", median["queued_to_claimed_s"]),
        ("  lyrics stage (template engine)", median["lyrics_s"]),
        ("  tags stage (lexical)", median["tags_s"]),
        ("  generate + master + encode + store (all variations)", median["generate_and_store_s"]),
        ("    render, slowest variation (sketch)", median["render_s"]),
        ("    post-process, slowest variation", median["postprocess_s"]),
        ("      of which loudness + true-peak limiting", median["loudness_s"]),
        ("      of which encoding m4a+mp3+flac+wav", median["encode_s"]),
        (
            "compute on the critical path",
            median["critical_path_compute_s"] + lyrics_compute_s + tags_compute_s,
        ),
        ("serving overhead (wall − critical-path compute)", overhead),
    ]
    if options.markdown:
        print("\n| measure | seconds |\n|---|---:|")
        for label, value in rows:
            name = label.strip() if not label.startswith("  ") else "↳ " + label.strip()
            print(f"| {name} | {value:.2f} |")
    else:
        for label, value in rows:
            print(f"{label:<58} {value:7.2f} s")
    print("\nper run wall s:", ", ".join(f"{r['wall_s']:.2f}" for r in results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
