"""Throughput of the songserve graph against a plain server doing the same work, in one run.

The plain server is one FastAPI app under uvicorn (a subprocess on a free loopback port) that
hands each song to a `ProcessPoolExecutor` of `--workers` processes (1 is the official ACE-Step
server's shape). Each song is made there with the graph's own code and config: template lyrics,
lexical tags, then for each variation in turn the sketch render (stored as the raw render, as
the decoder does) and the PostProcessor's work on it — mastering, the encodes of
`postprocess.formats`, HLS, C2PA signing (on by default, with a development chain), peaks —
written to a local object store. Then the graph (`--config`'s args, like bench_e2e.py, with the
same formats) runs in this process on Ray. Each system gets a short warm-up, then `--songs`
songs submitted at once; it reports songs/min (songs ÷ first POST → last done), the p50 /
p95 of POST → done, and the CPU seconds every process on the machine used during each burst,
by role (the audio work: the plain server's pool, or the Sketch and PostProcessor replicas).

    python scripts/bench_baseline.py [--songs 12] [--duration-s 20] [--variations 2]
        [--workers 2] [--also-workers 1] [--formats m4a,mp3,flac,wav] [--markdown]

Every process it starts (the uvicorn server and its pool, Ray) is stopped before it exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PROMPT = "a sunny indie-pop song about sailing home"
FORMATS = ("m4a", "mp3", "flac", "wav")


# -- the work of one song, as the graph does it ----------------------------------------------------


def app_config(
    config_path: str,
    data_dir: Path,
    formats: list[str],
    eager_formats: list[str] | None = None,
    burst: int = 1,
) -> Any:
    """The graph's resolved AppConfig: the config file's args, a private data dir, `formats`
    served and `eager_formats` (default: all of them) encoded while mastering, where the
    `postprocess.eager_formats` setting exists."""
    from serve.config import (
        AppConfig,
        PostProcessConfig,
        app_args_from_serve_config,
        load_serve_config,
        resolve_config,
    )

    args = app_args_from_serve_config(load_serve_config(config_path))
    args.setdefault("storage", {})["data_dir"] = str(data_dir)
    # The burst is sent at once, as to the plain server: admission must take all of it.
    jobs = args.setdefault("jobs", {})
    jobs["max_queued_jobs"] = max(int(jobs.get("max_queued_jobs", 0)), burst)
    postprocess = args.setdefault("postprocess", {})
    postprocess["formats"] = list(formats)
    if "eager_formats" in PostProcessConfig.model_fields:
        postprocess["eager_formats"] = list(eager_formats or formats)
    return resolve_config(AppConfig.model_validate(args))


def signing_config(config: Any) -> Any:
    """`config.postprocess` as the builder hands it to the PostProcessor: with the C2PA chain
    itself (a development chain written first, as the builder does, when none exists)."""
    postprocess = config.postprocess
    if not postprocess.c2pa.enabled:
        return postprocess
    from serve.certs import ensure_dev_chain, with_signing_chain

    c2pa = postprocess.c2pa
    if c2pa.cert_pem is None and c2pa.key_pem is None:
        ensure_dev_chain(c2pa)
    return postprocess.model_copy(update={"c2pa": with_signing_chain(c2pa)})


_WORKER: dict[str, Any] = {}


def _init_worker(postprocess: Any, storage: Any, sample_rate: int) -> None:
    """Once per pool process: the same model and PostProcessor a graph replica holds."""
    from deployments.post_processor import PostProcessor
    from pipeline.engines.sketch import SketchSongModel
    from serve.store import open_object_store

    _WORKER["model"] = SketchSongModel(sample_rate=sample_rate)
    _WORKER["post"] = PostProcessor(postprocess, storage)
    _WORKER["objects"] = open_object_store(storage)


def make_song(job_id: str, body: dict[str, Any]) -> dict[str, float]:
    """One song, start to finish, in this process; returns seconds per part."""
    from deployments.post_processor import Provenance
    from deployments.renders import RenderedSong
    from pipeline.audio import raw_render_bytes
    from pipeline.lyrics import format_lyrics, parse_lyrics, write_template_lyrics
    from pipeline.provenance import prompt_sha256
    from pipeline.song_models import RenderRequest
    from pipeline.tags import normalize_style
    from serve.store import RAW_RENDER_CONTENT_TYPE, raw_render_key

    model, post, objects = _WORKER["model"], _WORKER["post"], _WORKER["objects"]
    timings = {"text": 0.0, "render": 0.0, "postprocess": 0.0}
    started = time.perf_counter()
    prompt, seed, duration_s = body["prompt"], int(body["seed"]), float(body["duration_s"])
    # As LyricsLLM (template) writes them and the conductor reads them back.
    written = write_template_lyrics(prompt, duration_s, style=None, language="en", seed=seed)
    sections = parse_lyrics(format_lyrics(written))
    tags = normalize_style(prompt, language="en", instrumental=False)
    timings["text"] = time.perf_counter() - started
    for index in range(int(body["variations"])):
        started = time.perf_counter()
        request = RenderRequest(
            job_id, index, seed + index, duration_s, tags, sections, False, "en"
        )
        audio = model.render([request], lambda step, steps: None)[0]
        key = raw_render_key(job_id, index)
        render_finished = time.time()
        asyncio.run(objects.put(key, raw_render_bytes(audio), RAW_RENDER_CONTENT_TYPE))
        timings["render"] += time.perf_counter() - started
        started = time.perf_counter()
        rendered = RenderedSong(
            render_key=key,
            n_samples=int(audio.shape[-1]),
            sample_rate=model.sample_rate,
            model=model.name,
            model_version=model.version,
            replica=f"plain@{os.getpid()}",
            render_started_at=render_finished,
            render_finished_at=render_finished,
        )
        provenance = Provenance(
            title=f"songserve {job_id} variation {index}",
            seed=seed + index,
            prompt_sha256=prompt_sha256(prompt),
            created=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        asyncio.run(
            post.process(
                rendered, job_id=job_id, index=index, target_lufs=-14.0, provenance=provenance
            )
        )
        timings["postprocess"] += time.perf_counter() - started
    return timings


# -- the plain server (runs in a subprocess) -------------------------------------------------------


def serve_plain(options: argparse.Namespace) -> None:
    """FastAPI + uvicorn; songs go to a process pool. `POST /songs` → id; `GET /songs/{id}`
    blocks until the song is made."""
    import multiprocessing
    import uuid
    from concurrent.futures import Future, ProcessPoolExecutor
    from contextlib import asynccontextmanager

    import uvicorn
    from fastapi import FastAPI, HTTPException

    config = app_config(options.config, Path(options.data_dir), options.formats.split(","))
    sample_rate = config.models.pools[0].sample_rate
    pool = ProcessPoolExecutor(
        options.workers,
        # Not fork: this process runs an event loop and threads by then.
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(signing_config(config), config.storage, sample_rate),
    )
    songs: dict[str, Future[dict[str, float]]] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> Any:
        yield
        pool.shutdown(wait=True, cancel_futures=True)

    app = FastAPI(lifespan=lifespan)

    @app.post("/songs", status_code=202)
    async def submit(body: dict[str, Any]) -> dict[str, str]:
        song_id = f"song_{uuid.uuid4().hex[:12]}"
        songs[song_id] = pool.submit(make_song, song_id, body)
        return {"id": song_id}

    @app.get("/songs/{song_id}")
    async def wait(song_id: str) -> dict[str, Any]:
        if song_id not in songs:
            raise HTTPException(404, f"no song {song_id}")
        return {
            "id": song_id,
            "status": "succeeded",
            "timings_s": await asyncio.wrap_future(songs[song_id]),
        }

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    uvicorn.run(app, host="127.0.0.1", port=options.port, log_level="warning")


class PlainServer:
    """The plain server in its own process group, stopped with everything it started."""

    def __init__(self, workers: int, config: str, formats: list[str], data_dir: Path) -> None:
        from tests.helpers import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--plain-server",
            "--port",
            str(self.port),
            "--workers",
            str(workers),
            "--config",
            config,
            "--formats",
            ",".join(formats),
            "--data-dir",
            str(data_dir),
        ]
        self.process = subprocess.Popen(command, start_new_session=True)

    def wait_healthy(self, timeout_s: float = 120) -> None:
        import httpx

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the plain server exited with {self.process.returncode}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"the plain server was not up within {timeout_s:g} s")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # uvicorn, then its pool, shut down
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=30)
        # Anything of its group left (a pool process): its own group id, nothing else.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


# -- the clients -----------------------------------------------------------------------------------


def bodies(count: int, duration_s: float, variations: int, first_seed: int) -> list[dict[str, Any]]:
    return [
        {
            "prompt": PROMPT,
            "duration_s": duration_s,
            "variations": variations,
            "seed": first_seed + k,
        }
        for k in range(count)
    ]


async def _plain_burst(url: str, songs: list[dict[str, Any]]) -> tuple[float, list[float]]:
    """Submit all at once; (first POST → last done, each song's POST → done)."""
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=None) as client:
        loop = asyncio.get_running_loop()
        t0 = loop.time()

        async def one(body: dict[str, Any]) -> float:
            posted = loop.time()
            response = await client.post("/songs", json=body)
            response.raise_for_status()
            result = await client.get(f"/songs/{response.json()['id']}")
            result.raise_for_status()
            return loop.time() - posted

        latencies = await asyncio.gather(*(one(body) for body in songs))
        return loop.time() - t0, list(latencies)


async def _graph_burst(url: str, songs: list[dict[str, Any]]) -> tuple[float, list[float]]:
    """Submit all at once to `POST /v1/songs`; each is done at its SSE `done` event."""
    import httpx

    limits = httpx.Limits(max_connections=None)
    async with httpx.AsyncClient(base_url=url, timeout=None, limits=limits) as client:
        loop = asyncio.get_running_loop()
        t0 = loop.time()

        async def one(body: dict[str, Any]) -> float:
            posted = loop.time()
            response = await client.post("/v1/songs", json=body)
            if response.status_code != 202:
                raise RuntimeError(f"POST /v1/songs: {response.status_code} {response.text}")
            song_id = response.json()["id"]
            async with client.stream("GET", f"/v1/songs/{song_id}/events") as stream:
                async for line in stream.aiter_lines():
                    if line.startswith("event:"):
                        event = line[6:].strip()
                        if event == "done":
                            return loop.time() - posted
                        if event == "error":
                            raise RuntimeError(f"song {song_id} failed")
            raise RuntimeError(f"the event stream of {song_id} ended without done")

        latencies = await asyncio.gather(*(one(body) for body in songs))
        return loop.time() - t0, list(latencies)


def run_plain(options: argparse.Namespace, workers: int, data_dir: Path) -> dict[str, Any]:
    server = PlainServer(workers, options.config, options.formats, data_dir / f"plain-{workers}")
    try:
        server.wait_healthy()
        # Warm-up: one short song per process, so every worker has imported and built its chain.
        asyncio.run(_plain_burst(server.url, bodies(workers, 5, 1, 0)))
        songs = bodies(options.songs, options.duration_s, options.variations, 100)
        began, cpu_before = time.time(), cpu_snapshot()
        wall_s, latencies = asyncio.run(_plain_burst(server.url, songs))
        cpu = cpu_by_role(cpu_before)
        _say_window(f"plain-{workers}", began)
    finally:
        server.stop()
    name = f"FastAPI + {workers}-process pool" + (
        " (ACE-Step server shape)" if workers == 1 else ""
    )
    return _row(name, wall_s, latencies, cpu)


def run_graph(options: argparse.Namespace, data_dir: Path) -> tuple[dict[str, Any], float]:
    import ray
    from ray import serve

    from serve.app import build_app
    from tests.helpers import free_port

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    config = app_config(
        options.config,
        data_dir / "graph",
        options.formats,
        options.graph_eager_formats,
        burst=options.songs,
    )
    port = free_port()
    started = time.perf_counter()
    ray.init(include_dashboard=False, address="local", num_cpus=options.ray_num_cpus)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve._run(build_app(config), _blocking=False, name="songserve", route_prefix="/")
        _wait_running(options.deploy_timeout_s)
        startup_s = time.perf_counter() - started
        url = f"http://127.0.0.1:{port}"
        # Warm-up: two short songs (each replica imports and JITs on its first call).
        asyncio.run(_graph_burst(url, bodies(2, 5, options.variations, 0)))
        songs = bodies(options.songs, options.duration_s, options.variations, 100)
        began, cpu_before = time.time(), cpu_snapshot()
        wall_s, latencies = asyncio.run(_graph_burst(url, songs))
        cpu = cpu_by_role(cpu_before)
        _say_window("graph", began)
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
    return _row(f"songserve graph ({options.config})", wall_s, latencies, cpu), startup_s


def _say_window(system: str, began: float) -> None:
    """The burst's wall-clock window (epoch seconds) on stderr, to line up with a CPU profile
    taken beside the run."""
    print(f"burst window {system}: {began:.2f} {time.time():.2f}", file=sys.stderr)


def _role(process: Any) -> str:
    """Who a process is, for the CPU table: a graph deployment (its replicas together), a Ray
    or Serve system process, the plain server or its pool, or this bench."""
    try:
        command, name = " ".join(process.cmdline()), process.name()
    except Exception:  # noqa: BLE001 - gone, or not ours to read
        return "other"
    if name in ("raylet", "gcs_server"):
        return "raylet and GCS"
    if process.pid == os.getpid():
        return "this bench (clients; the graph's Ray driver)"
    if "ServeReplica:" in command:
        return command.split("ServeReplica:", 1)[1].split()[0].rsplit(":", 1)[-1].split(".")[0]
    for marker, role in (
        ("ServeController", "ServeController"),
        ("ProxyActor", "Serve proxy"),
        ("--plain-server", "plain server (uvicorn)"),
        ("multiprocessing.spawn", "plain server's pool"),
    ):
        if marker in command:
            return role
    return "other (Ray's dashboard agent, log monitor, …)" if "ray" in command else "other"


def cpu_snapshot() -> dict[int, tuple[str, float]]:
    """Every process's role and CPU seconds so far (its own and its reaped children's)."""
    import psutil

    snapshot: dict[int, tuple[str, float]] = {}
    for process in psutil.process_iter():
        try:
            times = process.cpu_times()
            snapshot[process.pid] = (_role(process), times.user + times.system)
        except psutil.Error:
            continue
    return snapshot


def cpu_by_role(before: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds each role used since `before` (processes started since count whole)."""
    used: dict[str, float] = {}
    for pid, (role, cpu_s) in cpu_snapshot().items():
        spent = cpu_s - before.get(pid, (role, 0.0))[1]
        if spent > 0:
            used[role] = used.get(role, 0.0) + spent
    return used


def _wait_running(timeout_s: float) -> None:
    """Until the app is RUNNING; RuntimeError naming the deployments that are not (a graph
    that asks for more CPUs than the machine has stays DEPLOYING without a word)."""
    from ray import serve

    deadline = time.monotonic() + timeout_s
    while True:
        app = serve.status().applications.get("songserve")
        status = str(app.status) if app is not None else "NOT_STARTED"
        if status.endswith("RUNNING"):
            return
        if status.endswith("DEPLOY_FAILED") or time.monotonic() > deadline:
            waiting = {
                name: f"{d.status}: {d.message}"[:300]
                for name, d in (app.deployments.items() if app is not None else [])
                if not str(d.status).endswith("HEALTHY")
            }
            raise RuntimeError(
                f"the graph is {status} after {timeout_s:g} s (--deploy-timeout-s); "
                f"not healthy: {waiting}"
            )
        time.sleep(1)


def _row(name: str, wall_s: float, latencies: list[float], cpu: dict[str, float]) -> dict[str, Any]:
    from serve.load import percentile

    return {
        "system": name,
        "songs_per_min": len(latencies) / wall_s * 60,
        "p50_s": percentile(latencies, 50),
        "p95_s": percentile(latencies, 95),
        "wall_s": wall_s,
        "cpu": cpu,
    }


# The processes that make the songs' audio; everything else coordinates or idles.
_COMPUTE_ROLES = ("plain server's pool", "Sketch", "PostProcessor")


def _cpu_table(rows: list[dict[str, Any]], songs: int) -> str:
    """CPU seconds by process role during each burst, and the compute per song."""
    lines = [
        "\n| system | role | CPU-s in the burst |",
        "|---|---|---:|",
    ]
    for row in rows:
        cpu = row["cpu"]
        for role, spent in sorted(cpu.items(), key=lambda item: -item[1]):
            if spent >= 0.05:
                lines.append(f"| {row['system']} | {role} | {spent:.2f} |")
        compute = sum(spent for role, spent in cpu.items() if role in _COMPUTE_ROLES)
        rest = sum(cpu.values()) - compute
        lines.append(
            f"| {row['system']} | **audio work per song** / everything else per song | "
            f"**{compute / songs:.2f}** / {rest / songs:.2f} |"
        )
    return "\n".join(lines)


def _line(row: dict[str, Any]) -> str:
    return (
        f"{row['system']:<58} {row['songs_per_min']:6.1f} songs/min  "
        f"p50 {row['p50_s']:6.1f} s  p95 {row['p95_s']:6.1f} s"
    )


def main() -> int:
    if "--plain-server" in sys.argv:
        server = argparse.ArgumentParser()
        server.add_argument("--plain-server", action="store_true")
        server.add_argument("--port", type=int, required=True)
        server.add_argument("--workers", type=int, required=True)
        server.add_argument("--config", required=True)
        server.add_argument("--formats", required=True)
        server.add_argument("--data-dir", required=True)
        serve_plain(server.parse_args())
        return 0

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--songs", type=int, default=12, help="songs submitted at once")
    parser.add_argument("--duration-s", type=float, default=20.0, help="song length")
    parser.add_argument("--variations", type=int, default=2, help="takes per song")
    parser.add_argument("--workers", type=int, default=2, help="the plain server's processes")
    parser.add_argument(
        "--also-workers",
        type=int,
        action="append",
        default=[],
        help="also measure a plain server of this many processes (e.g. 1); repeatable",
    )
    parser.add_argument("--config", default="config/local.yaml", help="the graph's Serve config")
    parser.add_argument(
        "--formats",
        default=",".join(FORMATS),
        help="formats both systems encode for every variation (postprocess.formats)",
    )
    parser.add_argument(
        "--graph-eager-formats",
        help="the graph's postprocess.eager_formats (default: all of --formats, the same work "
        "as the plain server; e.g. m4a to measure lazy encoding against it)",
    )
    parser.add_argument(
        "--deploy-timeout-s", type=float, default=300, help="how long the graph may take to start"
    )
    parser.add_argument(
        "--ray-num-cpus",
        type=int,
        help="logical CPUs Ray may hand out (default: the machine's cores, as `make run`)",
    )
    parser.add_argument("--markdown", action="store_true", help="a docs/benchmarks.md table")
    options = parser.parse_args()
    # On SIGTERM too, the finally blocks stop the plain server and Ray.
    signal.signal(signal.SIGTERM, lambda signum, _: sys.exit(128 + signum))
    options.formats = [f.strip() for f in options.formats.split(",") if f.strip()]
    unknown = sorted(set(options.formats) - set(FORMATS))
    if unknown or not options.formats:
        parser.error(f"--formats: choose from {', '.join(FORMATS)} (got {options.formats})")
    if options.graph_eager_formats is not None:
        options.graph_eager_formats = options.graph_eager_formats.split(",")
        if not set(options.graph_eager_formats) <= set(options.formats):
            parser.error("--graph-eager-formats: list only formats of --formats")
    if options.songs < 1 or options.workers < 1 or any(w < 1 for w in options.also_workers):
        parser.error("--songs, --workers and --also-workers must be ≥ 1")
    if not 5 <= options.duration_s <= 600 or not 1 <= options.variations <= 4:
        parser.error("--duration-s must be 5–600 and --variations 1–4 (the API's limits)")

    data_dir = Path(tempfile.mkdtemp(prefix="songserve-baseline-"))
    rows = []
    try:
        for workers in [options.workers, *options.also_workers]:
            print(f"plain server, {workers} process(es) …", file=sys.stderr)
            rows.append(run_plain(options, workers, data_dir))
            print(_line(rows[-1]), file=sys.stderr)
        print("songserve graph …", file=sys.stderr)
        graph, startup_s = run_graph(options, data_dir)
        rows.append(graph)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)

    baseline = rows[0]
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    print(f"# bench_baseline — {datetime.now(UTC):%Y-%m-%d} — {machine}")
    print(
        f"{options.songs} songs ({options.duration_s:g} s × {options.variations} variations) "
        f"submitted at once; formats {','.join(options.formats)} (graph eager: "
        f"{','.join(options.graph_eager_formats or options.formats)}); one warm-up each; graph "
        f"start-up {startup_s:.1f} s"
    )
    ratio = graph["songs_per_min"] / baseline["songs_per_min"]
    if options.markdown:
        print("\n| system | songs/min | p50 s | p95 s |\n|---|---:|---:|---:|")
        for row in rows:
            print(
                f"| {row['system']} | {row['songs_per_min']:.1f} | {row['p50_s']:.1f} "
                f"| {row['p95_s']:.1f} |"
            )
        print(f"\ngraph ÷ {baseline['system']}: **{ratio:.2f}×** songs/min")
        print(_cpu_table(rows, options.songs))
    else:
        for row in rows:
            print(_line(row))
        print(f"graph / {baseline['system']}: {ratio:.2f}x songs/min")
        print(_cpu_table(rows, options.songs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
