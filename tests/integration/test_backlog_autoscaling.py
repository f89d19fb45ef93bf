"""Backlog autoscaling on a real local Ray: a burst of songs scales a Sketch pool out on the job
store's backlog, and it scales back in once the burst drained.

The app is deployed from a Serve config, as `serve run config/….yaml` does (an application-level
autoscaling policy can only be given there), with one song at a time per conductor: the pool never
has more than one render in flight, so Serve's default policy (ongoing requests) would keep it at
one replica. Only the backlog behind the conductor's cap can scale it out.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from serve.autoscaling import APP_POLICY
from serve.config import StorageConfig, resolve_config
from serve.store import JobRecord, open_job_store

from . import conftest
from .conftest import APP_NAME

pytestmark = pytest.mark.integration

POOL = "Sketch"
SONGS = 10
DURATION_S = 40  # × expected_render_s_per_audio_s 0.05: 2 render seconds per song


def _running(pool: str) -> int:
    from ray import serve

    app = serve.status().applications.get(APP_NAME)
    if app is None or pool not in app.deployments:
        return 0
    states = app.deployments[pool].replica_states
    return sum(count for state, count in states.items() if state == "RUNNING")


@pytest.fixture
def backlog_app(serve_url: str, tmp_path: Path) -> Iterator[tuple[httpx.Client, StorageConfig]]:
    """The embedded app with a Sketch pool on backlog autoscaling (1–3 replicas), deployed from
    a Serve config with the application-level policy."""
    from ray import serve
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    args: dict[str, Any] = conftest.test_args(
        tmp_path / "state",
        jobs={
            "lease_s": 10.0,
            "heartbeat_s": 1.0,
            "poll_interval_s": 0.2,
            "max_concurrent_jobs": 1,  # the cap that hides the backlog from Serve's own policy
            "backlog_report_interval_s": 0.5,
        },
        models={
            "auto_order": ["sketch"],
            "pools": [
                {
                    "name": POOL,
                    "model": "sketch",
                    "expected_render_s_per_audio_s": 0.05,
                    "deployment": {
                        "max_ongoing_requests": 1,
                        "actor": {"num_cpus": 0.5},  # 3 replicas fit the session's 4 CPUs
                        "autoscaling": {
                            "min_replicas": 1,
                            "max_replicas": 3,
                            "policy": "backlog",
                            "backlog_s_per_replica": 2.0,  # one song's render per replica
                            "upscale_delay_s": 1.0,
                            "downscale_delay_s": 5.0,
                        },
                    },
                }
            ],
        },
    )
    config = ServeDeploySchema.model_validate(
        {
            "applications": [
                {
                    "name": APP_NAME,
                    "route_prefix": "/",
                    "import_path": "serve.app:build_app",
                    "args": args,
                    "autoscaling_policy": {"policy_function": APP_POLICY},
                }
            ]
        }
    )
    _get_global_client().deploy_apps(config)
    client = httpx.Client(base_url=serve_url, timeout=60)
    try:
        # Generous: replicas start slowly on a loaded 2-core machine.
        deadline = time.monotonic() + 300
        while True:
            try:
                if client.get("/healthz").status_code == 200 and _running(POOL) == 1:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the app never became healthy"
            time.sleep(0.5)
        yield client, resolve_config(args).storage
    finally:
        client.close()
        serve.delete(APP_NAME)


def test_a_burst_scales_the_pool_out_on_backlog_and_back_in_once_drained(
    backlog_app: tuple[httpx.Client, StorageConfig],
) -> None:
    client, storage = backlog_app
    assert _running(POOL) == 1

    started = time.time()
    ids = []
    for seed in range(SONGS):
        body = {"style": "synthwave", "duration_s": DURATION_S, "variations": 1, "seed": seed}
        response = client.post("/v1/songs", json=body)
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])

    # Replica counts as Serve reports them, every half second, until the burst drained and the
    # pool is back at its minimum.
    counts: list[tuple[float, int]] = []
    finished: set[str] = set()
    deadline = started + 480
    while len(finished) < SONGS or counts[-1][1] != 1:
        assert time.time() < deadline, f"{len(finished)} songs done; replicas: {counts[-5:]}"
        counts.append((time.time(), _running(POOL)))
        for song_id in set(ids) - finished:
            song = client.get(f"/v1/songs/{song_id}").json()
            if song["status"] in ("succeeded", "failed", "canceled"):
                assert song["status"] == "succeeded", song
                finished.add(song_id)
        time.sleep(0.5)

    renders = [_job(storage, song_id).variations[0].render for song_id in ids]
    last_render_at = max(render["render_finished_at"] for render in renders)
    out_at = next((at for at, running in counts if running > 1), None)
    assert out_at is not None and out_at < last_render_at, "no scale-out during the burst"
    peak = max(running for _, running in counts)
    assert peak <= 3  # max_replicas holds
    peak_at = next(at for at, running in counts if running == peak)
    in_at = next(at for at, running in counts if at > peak_at and running == 1)
    render_s = sorted(r["render_finished_at"] - r["render_started_at"] for r in renders)
    print(
        f"\nbacklog autoscaling: {SONGS} songs × {DURATION_S} s, one at a time per conductor; "
        f"first replica added {out_at - started:.1f} s after the burst began, peak {peak} "
        f"replicas {peak_at - started:.1f} s after; last render done {last_render_at - started:.1f}"
        f" s after; back to 1 replica {in_at - last_render_at:.1f} s after the last render "
        f"(all songs delivered {counts[-1][0] - started:.1f} s after); median render "
        f"{render_s[len(render_s) // 2]:.2f} s"
    )


def _job(storage: StorageConfig, song_id: str) -> JobRecord:
    async def read() -> JobRecord | None:
        store = open_job_store(storage)
        try:
            return await store.get_job(song_id)
        finally:
            await store.close()

    job = asyncio.run(read())
    assert job is not None
    return job
