"""What one song's audio work costs in CPU, by where it runs: why the graph's compute per song is
higher than the plain server's in `bench_baseline.py`.

The work is `bench_baseline.make_song` (template lyrics, lexical tags, the sketch render and
the PostProcessor's mastering, encodes, HLS, signing and peaks of each variation), so the
figures are comparable with that script's "audio work per song". Two comparisons:

1. One song at a time, no contention: in a plain spawned process, then inside a Ray Serve
   replica (the environment a graph deployment runs in: Ray's core-worker threads, Serve's
   event loop and metrics).
2. Twelve songs at once on a `ProcessPoolExecutor` of 2 processes, then of 4: on a 2-core
   machine, 4 busy processes is the graph's shape (two decoder and two post-processing
   replicas busy together).

    python scripts/bench_contention.py [--songs 8] [--duration-s 20] [--variations 2]

Prints CPU seconds per song (the process's own CPU time around each song).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import bench_baseline  # noqa: E402 - after the path is set, as the plain server's pool does


def _body(index: int, duration_s: float, variations: int) -> dict[str, Any]:
    return {
        "prompt": bench_baseline.PROMPT,
        "seed": 100 + index,
        "duration_s": duration_s,
        "variations": variations,
    }


def cpu_of_song(index: int, duration_s: float, variations: int) -> float:
    """One song in this process (set up by `bench_baseline._init_worker`); its CPU seconds."""
    started = time.process_time()
    song_id = f"song_{os.getpid()}_{index}_{time.time_ns()}"
    bench_baseline.make_song(song_id, _body(index, duration_s, variations))
    return time.process_time() - started


def songs_one_at_a_time(
    setup: tuple[Any, ...], songs: int, duration_s: float, variations: int
) -> list[float]:
    """Warm up, then `songs` songs in turn in this process; CPU seconds of each."""
    bench_baseline._init_worker(*setup)
    cpu_of_song(-1, 5, 1)
    return [cpu_of_song(i, duration_s, variations) for i in range(songs)]


def in_a_serve_replica(
    setup: tuple[Any, ...], songs: int, duration_s: float, variations: int
) -> list[float]:
    """`songs_one_at_a_time` inside one replica of a Serve deployment on a local Ray."""
    import ray
    from ray import serve

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(
        include_dashboard=False,
        address="local",
        runtime_env={"env_vars": {"PYTHONPATH": f"{REPO}:{REPO / 'scripts'}"}},
    )
    try:

        @serve.deployment(ray_actor_options={"num_cpus": 0.25})
        class Songs:
            def run(self) -> list[float]:
                return songs_one_at_a_time(setup, songs, duration_s, variations)

        handle = serve.run(Songs.bind(), name="contention", route_prefix=None)
        cpu: list[float] = handle.run.remote().result(timeout_s=1800)
        return cpu
    finally:
        serve.shutdown()
        ray.shutdown()


def concurrently(
    setup: tuple[Any, ...], processes: int, songs: int, duration_s: float, variations: int
) -> tuple[list[float], float]:
    """Warm every process up, then `songs` songs over `processes` at once; CPU seconds of each
    and the wall time of all."""
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        processes, mp_context=spawn, initializer=bench_baseline._init_worker, initargs=setup
    ) as pool:
        list(pool.map(cpu_of_song, range(processes), [5] * processes, [1] * processes))
        started = time.perf_counter()
        cpu = list(pool.map(cpu_of_song, range(songs), [duration_s] * songs, [variations] * songs))
        return cpu, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--songs", type=int, default=8, help="songs per measurement")
    parser.add_argument("--duration-s", type=float, default=20.0)
    parser.add_argument("--variations", type=int, default=2)
    parser.add_argument("--config", default="config/local.yaml")
    options = parser.parse_args()
    os.chdir(REPO)
    data_dir = Path(tempfile.mkdtemp(prefix="songserve-contention-"))
    config = bench_baseline.app_config(options.config, data_dir, list(bench_baseline.FORMATS))
    setup = (
        bench_baseline.signing_config(config),
        config.storage,
        config.models.pools[0].sample_rate,
    )
    work = (options.songs, options.duration_s, options.variations)
    rows: list[tuple[str, list[float], float | None]] = []
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=spawn) as one:
        plain = one.submit(songs_one_at_a_time, setup, *work).result()
    rows.append(("one at a time, plain process", plain, None))
    rows.append(("one at a time, Serve replica", in_a_serve_replica(setup, *work), None))
    for processes in (2, 4):
        cpu, wall_s = concurrently(setup, processes, *work)
        rows.append((f"{options.songs} at once, {processes}-process pool", cpu, wall_s))

    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    print(f"# bench_contention — {datetime.now(UTC):%Y-%m-%d} — {machine}")
    print(
        f"{options.songs} songs of {options.duration_s:g} s × {options.variations} per row; "
        "formats m4a,mp3,flac,wav encoded eagerly\n"
    )
    print("| where | CPU-s per song, mean | median | wall s for the songs |")
    print("|---|---:|---:|---:|")
    for name, cpu, wall_s in rows:
        median = sorted(cpu)[len(cpu) // 2]
        wall = "–" if wall_s is None else f"{wall_s:.1f}"
        print(f"| {name} | {sum(cpu) / len(cpu):.3f} | {median:.3f} | {wall} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
