"""Deleting songs: one on request (`DELETE /v1/songs/{id}`), and every finished song older than
`jobs.retention_days`, swept in bounded batches by each conductor replica; uploads
(`POST /v1/uploads`) older than `jobs.retention_days` go by the same sweep.

A song's files go first, then its records: a deletion cut short leaves records that a retry (or
the next sweep) finds again, never files nobody can reach. Sweeps on several replicas may pick the
same song; deleting it twice is harmless.

Replicate results delivered by webhook (`replicate/predictions/<id>.json`) are read and deleted
by the render that waits for them; one nobody reads (its prediction finished in the create call,
or a poll found it first) is deleted once it is a day old, whatever `jobs.retention_days` says.

Uploads live only in the object store (`uploads/<owner>/<id>/`), and an upload id carries the
time it was made (`serve.store.new_upload_id`): the sweep lists the keys under `uploads/` and reads
no record. It finds an upload by any of its keys, so one whose record was never written (a
crash between its two writes) is swept too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING

from serve.store import (
    REPLICATE_PREDICTIONS_ROOT,
    UPLOADS_ROOT,
    song_prefix,
    upload_created_at,
    upload_key,
    upload_location,
)

if TYPE_CHECKING:
    from serve.config import JobsConfig
    from serve.store import JobStore, ObjectStore

logger = logging.getLogger("ray.serve")

DAY_S = 86400.0
# A render reads its delivery within seconds of its arrival (replicate.webhook_check_s); one left
# this long is one nobody waits for.
STALE_DELIVERY_S = DAY_S


async def delete_song(jobs: JobStore, objects: ObjectStore, job_id: str) -> bool:
    """Delete a song's files, then its records; False when the song did not exist."""
    await objects.delete_prefix(song_prefix(job_id))
    return await jobs.delete_job(job_id)


async def sweep_expired(
    jobs: JobStore, objects: ObjectStore, retention_days: float, batch: int, now: float
) -> int:
    """Delete up to `batch` songs that finished more than `retention_days` before `now`."""
    expired = await jobs.jobs_finished_before(now - retention_days * DAY_S, batch)
    for job_id in expired:
        await delete_song(jobs, objects, job_id)
    return len(expired)


async def sweep_expired_uploads(
    objects: ObjectStore, retention_days: float, batch: int, now: float
) -> int:
    """Delete up to `batch` uploads made more than `retention_days` before `now`."""
    cutoff = now - retention_days * DAY_S
    expired: dict[tuple[str, str], None] = {}  # (owner, upload id), in listing order
    for key in await objects.list_keys(UPLOADS_ROOT):
        located = upload_location(key)
        if located is None or located in expired:
            continue
        created_at = upload_created_at(located[1])
        if created_at is not None and created_at < cutoff:
            expired[located] = None
            if len(expired) == batch:
                break
    for owner, upload_id in expired:
        await objects.delete_prefix(upload_key(owner, upload_id))
    return len(expired)


async def sweep_stale_deliveries(objects: ObjectStore, batch: int, now: float) -> int:
    """Delete up to `batch` Replicate webhook deliveries received more than STALE_DELIVERY_S
    before `now` (one without a readable `received_at` counts as stale: a render that still
    waits for it finds its prediction by polling)."""
    stale: list[str] = []
    for key in await objects.list_keys(REPLICATE_PREDICTIONS_ROOT):
        try:
            received_at = json.loads(await objects.get(key)).get("received_at")
        except KeyError:
            continue  # read (and deleted) by its render since the listing
        except (ValueError, AttributeError):
            received_at = None
        if not isinstance(received_at, int | float) or received_at < now - STALE_DELIVERY_S:
            stale.append(key)
            if len(stale) == batch:
                break
    for key in stale:
        await objects.delete_prefix(key)
    return len(stale)


class RetentionSweeper:
    """Runs `sweep_expired` and `sweep_expired_uploads` every `jobs.retention_sweep_interval_s`,
    and at once again while a sweep fills its batch (a backlog drains batch after batch, never in
    one huge transaction). With `sweep_deliveries` (some pool delivers by webhook) it also runs
    `sweep_stale_deliveries`, with or without `jobs.retention_days`."""

    def __init__(
        self,
        config: JobsConfig,
        jobs: JobStore,
        objects: ObjectStore,
        *,
        sweep_deliveries: bool = False,
    ) -> None:
        self._config = config
        self._jobs = jobs
        self._objects = objects
        self._sweep_deliveries = sweep_deliveries

    async def run_forever(self) -> None:
        config = self._config
        if config.retention_days is None and not self._sweep_deliveries:
            return
        while True:
            try:
                deleted = uploads = deliveries = 0
                if config.retention_days is not None:
                    deleted = await sweep_expired(
                        self._jobs,
                        self._objects,
                        config.retention_days,
                        config.retention_batch,
                        time.time(),
                    )
                    uploads = await sweep_expired_uploads(
                        self._objects, config.retention_days, config.retention_batch, time.time()
                    )
                if self._sweep_deliveries:
                    deliveries = await sweep_stale_deliveries(
                        self._objects, config.retention_batch, time.time()
                    )
                if deleted:
                    logger.info("retention: deleted %d song(s) past jobs.retention_days", deleted)
                if uploads:
                    logger.info("retention: deleted %d upload(s) past jobs.retention_days", uploads)
                if deliveries:
                    logger.info("retention: deleted %d unread Replicate deliveries", deliveries)
                if config.retention_batch in (deleted, uploads, deliveries):
                    await asyncio.sleep(0)  # more are waiting: the next batch now
                    continue
            except Exception:  # a store outage: the next sweep tries again
                logger.warning("retention sweep failed; retrying later", exc_info=True)
            await asyncio.sleep(config.retention_sweep_interval_s)
