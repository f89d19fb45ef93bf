"""Deleting songs: one on request (`DELETE /v1/songs/{id}`), and every finished song older than
`jobs.retention_days`, swept in bounded batches by each conductor replica; uploads
(`POST /v1/uploads`) older than `jobs.retention_days` go by the same sweep.

A song's files go first, then its records: a deletion cut short leaves records that a retry (or
the next sweep) finds again, never files nobody can reach. Sweeps on several replicas may pick the
same song; deleting it twice is harmless.

Uploads live only in the object store (`uploads/<owner>/<id>/`), and an upload id carries the
time it was made (`serve.store.new_upload_id`): the sweep lists the keys under `uploads/` and reads
no record. It finds an upload by any of its keys, so one whose record was never written (a
crash between its two writes) is swept too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from serve.store import UPLOADS_ROOT, song_prefix, upload_created_at, upload_key, upload_location

if TYPE_CHECKING:
    from serve.config import JobsConfig
    from serve.store import JobStore, ObjectStore

logger = logging.getLogger("ray.serve")

DAY_S = 86400.0


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


class RetentionSweeper:
    """Runs `sweep_expired` and `sweep_expired_uploads` every `jobs.retention_sweep_interval_s`,
    and at once again while a sweep fills its batch (a backlog drains batch after batch, never in
    one huge transaction)."""

    def __init__(self, config: JobsConfig, jobs: JobStore, objects: ObjectStore) -> None:
        self._config = config
        self._jobs = jobs
        self._objects = objects

    async def run_forever(self) -> None:
        config = self._config
        if config.retention_days is None:
            return
        while True:
            try:
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
                if deleted:
                    logger.info("retention: deleted %d song(s) past jobs.retention_days", deleted)
                if uploads:
                    logger.info("retention: deleted %d upload(s) past jobs.retention_days", uploads)
                if config.retention_batch in (deleted, uploads):
                    await asyncio.sleep(0)  # more are waiting: the next batch now
                    continue
            except Exception:  # a store outage: the next sweep tries again
                logger.warning("retention sweep failed; retrying later", exc_info=True)
            await asyncio.sleep(config.retention_sweep_interval_s)
