"""Tenancy in the job store, on every backend: managed API keys (hashed), and admission decided in
the transaction that creates a job, so concurrent requests on several replicas never admit more
than a limit allows."""

from __future__ import annotations

import asyncio
import time

import pytest

from serve.store import JobStore
from serve.store.tenancy import (
    Admission,
    AdmissionRefused,
    ApiKeyRecord,
    hash_api_key,
    new_api_key,
    new_owner_id,
)
from tests.store_backends import Backend


def _key(name: str, key: str, **quotas: float) -> ApiKeyRecord:
    return ApiKeyRecord(
        name=name,
        owner=new_owner_id(),
        key_hash=hash_api_key(key),
        prefix=key[:8],
        created_at=time.time(),
        quotas=dict(quotas),
    )


async def _try_create(
    store: JobStore, owner: str, admission: Admission, audio_s: float = 60.0, **kwargs: object
) -> str:
    try:
        await store.create_job(
            owner=owner,
            request={"prompt": "x"},
            seed=1,
            variations=2,
            audio_s=audio_s,
            admission=admission,
            **kwargs,  # type: ignore[arg-type]
        )
    except AdmissionRefused as refused:
        return refused.reason
    return "admitted"


def test_keys_are_kept_hashed_found_by_hash_and_revoked(backend: Backend) -> None:
    async def scenario(store: JobStore) -> None:
        key = new_api_key()
        assert key.startswith("ss_") and len(key) > 40
        record = _key("web", key, songs_per_day=3)
        await store.add_api_key(record)
        other_replica = backend.new_store()
        found = await other_replica.find_api_key(hash_api_key(key))
        assert (
            found is not None
            and found.owner == record.owner
            and found.quotas == {"songs_per_day": 3}
        )
        assert key not in repr(found) and found.owner.startswith("own_")
        assert await store.find_api_key(hash_api_key("ss_unknown")) is None
        with pytest.raises(ValueError, match="exists"):
            await store.add_api_key(_key("web", new_api_key()))
        assert await store.count_api_keys() == 1
        await store.touch_api_key("web")
        (listed,) = await store.list_api_keys()
        assert listed.last_used_at is not None and listed.active
        assert await other_replica.revoke_api_key("web")
        assert not await store.revoke_api_key("web")
        assert await store.find_api_key(hash_api_key(key)) is None
        assert await store.count_api_keys() == 0
        await store.add_api_key(_key("web", new_api_key()))  # the name is free again
        assert [k.active for k in await store.list_api_keys()] == [False, True]

    backend.run(scenario)


def test_a_burst_on_three_replicas_admits_exactly_the_queue_limit(backend: Backend) -> None:
    async def scenario(store: JobStore) -> None:
        replicas = [store, backend.new_store(), backend.new_store()]
        admission = Admission(max_queued=5)
        answers = await asyncio.gather(
            *(_try_create(replicas[i % 3], f"owner{i % 4}", admission) for i in range(30))
        )
        assert answers.count("admitted") == 5
        assert answers.count("too_many_queued") == 25
        assert await store.count_jobs("queued") == 5

    backend.run(scenario)


def test_one_owners_burst_leaves_room_for_the_others(backend: Backend) -> None:
    async def scenario(store: JobStore) -> None:
        admission = Admission(max_queued=10, max_queued_per_owner=3)
        burst = await asyncio.gather(*(_try_create(store, "greedy", admission) for _ in range(12)))
        assert burst.count("admitted") == 3 and burst.count("owner_queue_full") == 9
        assert await _try_create(store, "polite", admission) == "admitted"

    backend.run(scenario)


def test_quotas_count_work_in_progress_and_the_day(backend: Backend) -> None:
    async def scenario(store: JobStore) -> None:
        day = time.time() - 3600
        concurrent = Admission(max_queued=100, concurrent_jobs=2, day_start=day)
        assert [await _try_create(store, "a", concurrent) for _ in range(3)] == [
            "admitted",
            "admitted",
            "concurrent_jobs",
        ]
        # A job that finished no longer counts as concurrent.
        claimed = await store.claim_next("w", lease_s=30, max_attempts=1)
        assert claimed is not None and claimed.lease_token is not None
        await store.update_job(claimed.id, claimed.lease_token, status="succeeded")
        assert await _try_create(store, "a", concurrent) == "admitted"

        daily = Admission(max_queued=100, songs_per_day=4, day_start=day)
        assert await _try_create(store, "a", daily) == "admitted"  # the 4th today
        assert await _try_create(store, "a", daily) == "songs_per_day"
        assert await _try_create(store, "b", daily) == "admitted"  # another owner's own count
        tomorrow = Admission(max_queued=100, songs_per_day=4, day_start=time.time() + 1)
        assert await _try_create(store, "a", tomorrow) == "admitted"

        audio = Admission(max_queued=100, audio_seconds_per_day=100.0, day_start=day)
        assert await _try_create(store, "c", audio, audio_s=60) == "admitted"
        assert await _try_create(store, "c", audio, audio_s=60) == "audio_seconds_per_day"
        assert await _try_create(store, "c", audio, audio_s=40) == "admitted"

        usage = await store.owner_usage("a", day)
        assert (usage.active, usage.songs_today) == (4, 5)  # one of its five finished
        assert usage.audio_seconds_today == pytest.approx(5 * 60.0)

    backend.run(scenario)


def test_a_retried_request_gets_its_job_even_when_full(backend: Backend) -> None:
    async def scenario(store: JobStore) -> None:
        admission = Admission(max_queued=1)
        job, created = await store.create_job(
            owner="a",
            request={"prompt": "x"},
            seed=1,
            variations=1,
            idempotency_key="k",
            admission=admission,
        )
        again, created_again = await store.create_job(
            owner="a",
            request={"prompt": "x"},
            seed=1,
            variations=1,
            idempotency_key="k",
            admission=admission,
        )
        assert created and not created_again and again.id == job.id

    backend.run(scenario)


def test_every_replica_reads_the_same_shared_secret(backend: Backend) -> None:
    async def scenario(store: JobStore) -> None:
        replicas = [store, backend.new_store(), backend.new_store()]
        secrets = await asyncio.gather(*(r.shared_secret("media_urls") for r in replicas))
        assert len(set(secrets)) == 1 and len(secrets[0]) == 64
        assert await store.shared_secret("other") != secrets[0]

    backend.run(scenario)
