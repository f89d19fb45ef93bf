"""Capacity on a real local Ray: a queued song reports its place in line and expected start (GET
and the `queue` SSE event), and /v1/pools counts renders across the cluster (in the job store),
with the measured speed and expected wait of each pool."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from serve.store import open_job_store
from tests.helpers import read_events, wait_for_song

from .conftest import Deployed

pytestmark = pytest.mark.integration

DeployFn = Callable[..., Deployed]


def _render_elsewhere(app: Deployed, duration_s: float) -> None:
    """What another conductor of the cluster leaves in the store while it renders one variation
    on the Sketch pool: a claimed job (lease live for the whole test) whose variation names the
    pool. No router of this app ever sees that render."""

    async def run() -> None:
        store = open_job_store(app.storage)
        try:
            job, _ = await store.create_job(
                owner="elsewhere", request={"duration_s": duration_s}, seed=1, variations=1
            )
            claimed = await store.claim_next("conductor@elsewhere", lease_s=600, max_attempts=1)
            # This app's one conductor slot is taken, so nobody else claims it.
            assert claimed is not None and claimed.id == job.id and claimed.lease_token
            await store.update_variation(
                job.id, 0, claimed.lease_token, status="running", render={"pool": "Sketch"}
            )
        finally:
            await store.close()

    asyncio.run(run())


def test_queued_songs_report_their_place_and_pools_count_the_whole_cluster(
    deploy: DeployFn,
) -> None:
    app = deploy(jobs={"max_concurrent_jobs": 1})  # one song at a time: the others queue
    client = app.client
    body = {"style": "slow ambient drone", "instrumental": True, "duration_s": 60, "seed": 21}
    first = client.post("/v1/songs", json=body).json()["id"]
    deadline = time.monotonic() + 30
    while client.get(f"/v1/songs/{first}").json()["status"] == "queued":
        assert time.monotonic() < deadline, "the first song was never claimed"
        time.sleep(0.05)
    _render_elsewhere(app, 30.0)
    second, third = (
        client.post("/v1/songs", json={**body, "duration_s": 30, "seed": seed}).json()["id"]
        for seed in (22, 23)
    )

    with ThreadPoolExecutor(1) as listener:
        streamed = listener.submit(read_events, client, third, 180.0, queue=True)
        song = client.get(f"/v1/songs/{third}").json()
        assert song["status"] == "queued"
        assert song["queue"]["position"] == 1  # the second song is ahead of it
        # Ahead of it: the first song's renders, the one elsewhere, the second song's two.
        assert song["queue"]["expected_start_s"] > 0
        assert client.get(f"/v1/songs/{second}").json()["queue"]["position"] == 0
        assert "queue" not in client.get(f"/v1/songs/{first}").json()  # running: not in line

        for song_id in (first, second, third):
            assert wait_for_song(client, song_id, timeout_s=180)["status"] == "succeeded"
        events = streamed.result(timeout=60)
    assert "queue" not in client.get(f"/v1/songs/{third}").json()

    # The stream told the place on opening and each time it changed, while queued only.
    queue = [data for _, kind, data in events if kind == "queue"]
    assert [data["position"] for data in queue] == [1, 0]
    assert all(data["expected_start_s"] >= 0 for data in queue)
    kinds = [kind for _, kind, _ in events]
    started = next(i for i, (_, kind, data) in enumerate(events) if kind == "progress")
    assert (
        kinds.index("queue") == 0 and max(i for i, k in enumerate(kinds) if k == "queue") < started
    )
    assert kinds[-1] == "done"

    # Every render of the app has ended; the one elsewhere is still counted: the counts come
    # from the job store, for the whole cluster, not from what this app's router routed.
    pools = client.get("/v1/pools").json()["pools"]
    assert len(pools) == 1
    sketch = pools[0]
    assert (sketch["replicas"], sketch["capacity"]) == (2, 2)
    assert (sketch["in_flight"], sketch["in_flight_audio_s"]) == (1, 30.0)
    assert sketch["in_flight_source"] == "cluster"
    assert sketch["expected_wait_s"] == 0.0  # one of two slots is free
    # Speed measured on this app's six renders, no longer the configured guess.
    assert sketch["measured_renders"] == 6
    assert sketch["seconds_per_audio_second"] > 0
    assert sketch["seconds_per_audio_second"] != 0.05
