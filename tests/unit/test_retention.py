"""Deleting songs: `DELETE /v1/songs/{id}` removes the records and every file of a finished song;
the retention sweep removes finished songs past `jobs.retention_days`, in bounded batches, on
every job-store backend."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from serve.config import JobsConfig, resolve_config
from serve.http.auth import LOCAL_OWNER
from serve.store import (
    REPLICATE_PREDICTIONS_ROOT,
    JobStore,
    ObjectStore,
    open_object_store,
    replicate_prediction_key,
    song_prefix,
    variation_key,
)
from serve.store.files import FilesystemObjectStore
from serve.workflow.retention import (
    STALE_DELIVERY_S,
    RetentionSweeper,
    sweep_expired,
    sweep_stale_deliveries,
)
from tests.http_graph import api_client
from tests.store_backends import Backend


async def _song(
    jobs: JobStore, objects: ObjectStore, finished: bool, owner: str = LOCAL_OWNER
) -> str:
    """A song with files; `finished`: it succeeded (claimed first: create unfinished ones last)."""
    job, _ = await jobs.create_job(owner=owner, request={"prompt": "p"}, seed=1, variations=1)
    await objects.put(variation_key(job.id, 0, "audio.m4a"), b"m4a", "audio/mp4")
    await objects.put(variation_key(job.id, 0, "stems/drums.wav"), b"wav", "audio/wav")
    if finished:
        claimed = await jobs.claim_next("test", lease_s=30, max_attempts=1, exclude=())
        assert claimed is not None and claimed.id == job.id and claimed.lease_token
        await jobs.update_job(job.id, claimed.lease_token, status="succeeded")
    return job.id


def test_delete_removes_a_finished_song_and_every_file(tmp_path: Path) -> None:
    config = resolve_config({"storage": {"data_dir": str(tmp_path)}})
    client, services = api_client(config)
    objects = services.objects
    done = asyncio.run(_song(services.jobs, objects, finished=True))
    foreign = asyncio.run(_song(services.jobs, objects, finished=True, owner="key_other"))
    waiting = asyncio.run(_song(services.jobs, objects, finished=False))

    assert client.delete(f"/v1/songs/{done}").status_code == 204
    assert client.get(f"/v1/songs/{done}").status_code == 404
    assert asyncio.run(objects.list_keys(song_prefix(done))) == []
    assert client.delete(f"/v1/songs/{done}").status_code == 404

    busy = client.delete(f"/v1/songs/{waiting}")
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "not_finished"
    assert client.delete(f"/v1/songs/{foreign}").status_code == 404  # not the caller's
    assert asyncio.run(objects.list_keys(song_prefix(foreign)))  # untouched


def test_the_sweep_deletes_expired_songs_in_bounded_batches(
    backend: Backend, tmp_path: Path
) -> None:
    objects = FilesystemObjectStore(tmp_path / "objects")

    async def scenario(jobs: JobStore) -> None:
        finished = [await _song(jobs, objects, finished=True) for _ in range(3)]
        waiting = await _song(jobs, objects, finished=False)
        now = time.time()
        assert await sweep_expired(jobs, objects, 1.0, 2, now) == 0  # not a day old yet
        later = now + 2 * 86400
        assert await sweep_expired(jobs, objects, 1.0, 2, later) == 2
        assert await sweep_expired(jobs, objects, 1.0, 2, later) == 1
        assert await sweep_expired(jobs, objects, 1.0, 2, later) == 0
        for job_id in finished:
            assert await jobs.get_job(job_id) is None
            assert await objects.list_keys(song_prefix(job_id)) == []
        assert await jobs.get_job(waiting) is not None  # unfinished songs are never swept
        assert await objects.list_keys(song_prefix(waiting))

    backend.run(scenario)


def test_each_conductor_replica_sweeps_on_its_interval(tmp_path: Path) -> None:
    from serve.store.sqlite import SQLiteJobStore

    config = JobsConfig(
        retention_days=0.2 / 86400, retention_sweep_interval_s=0.05, retention_batch=1
    )
    objects = open_object_store(resolve_config({"storage": {"data_dir": str(tmp_path)}}).storage)

    async def scenario() -> None:
        jobs = SQLiteJobStore(tmp_path / "jobs.db")
        ids = [await _song(jobs, objects, finished=True) for _ in range(3)]
        sweeper = asyncio.create_task(RetentionSweeper(config, jobs, objects).run_forever())
        deadline = time.monotonic() + 10
        while any([await jobs.get_job(i) for i in ids]):
            assert time.monotonic() < deadline, "the sweeper never deleted the expired songs"
            await asyncio.sleep(0.05)
        sweeper.cancel()
        await jobs.close()

    asyncio.run(scenario())
    # Without retention_days the sweeper has nothing to do and ends at once.
    asyncio.run(RetentionSweeper(JobsConfig(), None, None).run_forever())  # type: ignore[arg-type]


async def _delivery(objects: ObjectStore, prediction_id: str, received_at: object) -> str:
    key = replicate_prediction_key(prediction_id)
    body = {"id": prediction_id, "status": "succeeded", "received_at": received_at}
    await objects.put(key, json.dumps(body).encode(), "application/json")
    return key


def test_replicate_deliveries_nobody_read_go_after_a_day(tmp_path: Path) -> None:
    objects = FilesystemObjectStore(tmp_path)
    now = time.time()

    async def scenario() -> None:
        fresh = await _delivery(objects, "fresh1", now - 60)
        old = [await _delivery(objects, f"old{i}", now - STALE_DELIVERY_S - 1) for i in range(2)]
        unreadable = replicate_prediction_key("broken1")
        await objects.put(unreadable, b"{not json", "application/json")
        # A batch at a time; the fresh one stays for the render that waits for it.
        assert await sweep_stale_deliveries(objects, 2, now) == 2
        assert await sweep_stale_deliveries(objects, 2, now) == 1
        assert await sweep_stale_deliveries(objects, 2, now) == 0
        assert await objects.list_keys(REPLICATE_PREDICTIONS_ROOT) == [fresh]
        assert not {*old, unreadable} & set(await objects.list_keys(REPLICATE_PREDICTIONS_ROOT))

    asyncio.run(scenario())


def test_the_sweeper_clears_stale_deliveries_without_retention_days(tmp_path: Path) -> None:
    objects = FilesystemObjectStore(tmp_path)
    config = JobsConfig(retention_sweep_interval_s=0.05)
    assert config.retention_days is None

    async def scenario() -> None:
        stale = await _delivery(objects, "stale1", time.time() - STALE_DELIVERY_S - 1)
        sweeper = RetentionSweeper(config, None, objects, sweep_deliveries=True)  # type: ignore[arg-type]
        task = asyncio.create_task(sweeper.run_forever())
        deadline = time.monotonic() + 10
        while stale in await objects.list_keys(REPLICATE_PREDICTIONS_ROOT):
            assert time.monotonic() < deadline, "the sweeper never deleted the stale delivery"
            await asyncio.sleep(0.05)
        assert not task.done()  # it keeps sweeping
        task.cancel()

    asyncio.run(scenario())
