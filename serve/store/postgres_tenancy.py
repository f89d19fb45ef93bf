"""The Postgres job store's tenancy: managed API keys, what an owner has in the store (for
admission and `GET /v1/usage`), and deleting songs (on request, or past `jobs.retention_days`).
Mixed into `PostgresJobStore`, whose pool and cursors it uses.

Admission runs inside the creating transaction under one transaction-scoped advisory lock, so the
counts it reads cannot change before the job is inserted, whichever replica inserts it."""

from __future__ import annotations

import secrets
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from .mixin_hosts import PostgresHost
from .postgres_connect import DB_NOW as _NOW
from .tenancy import ADMISSION_LOCK_ID, Admission, ApiKeyRecord, OwnerUsage, check_admission

_USAGE = (
    "SELECT count(*) FILTER (WHERE status IN ('queued', 'running')) AS active,"
    " count(*) FILTER (WHERE status = 'queued') AS queued,"
    " count(*) FILTER (WHERE created_at >= %s) AS songs,"
    " COALESCE(sum(audio_s) FILTER (WHERE created_at >= %s), 0) AS audio_s"
    " FROM jobs WHERE owner = %s AND (status IN ('queued', 'running') OR created_at >= %s)"
)


class PostgresTenancy(PostgresHost):
    """Needs the host store's `_cursor`, `_one` and `_all`."""

    async def _admit(
        self,
        cur: psycopg.AsyncCursor[dict[str, Any]],
        admission: Admission,
        owner: str,
        audio_s: float,
    ) -> None:
        """Inside the creating transaction: take the admission lock (held to its commit), then
        refuse the job when it would pass a limit."""
        await self._one(cur, "SELECT pg_advisory_xact_lock(%s)", (ADMISSION_LOCK_ID,))
        total = await self._one(cur, "SELECT count(*) AS n FROM jobs WHERE status = 'queued'")
        day = admission.day_start
        usage = await self._one(cur, _USAGE, (day, day, owner, day))
        assert total is not None and usage is not None
        check_admission(admission, int(total["n"]), OwnerUsage.from_row(usage), audio_s)

    async def owner_usage(self, owner: str, day_start: float) -> OwnerUsage:
        async with self._cursor() as cur:
            row = await self._one(cur, _USAGE, (day_start, day_start, owner, day_start))
        assert row is not None
        return OwnerUsage.from_row(row)

    async def add_api_key(self, key: ApiKeyRecord) -> None:
        async with self._cursor() as cur:
            try:
                await self._one(
                    cur,
                    "INSERT INTO api_keys (name, owner, key_hash, prefix, created_at, quotas)"
                    " VALUES (%s, %s, %s, %s, %s, %s) RETURNING name",
                    (
                        key.name,
                        key.owner,
                        key.key_hash,
                        key.prefix,
                        key.created_at,
                        Jsonb(key.quotas),
                    ),
                )
            except psycopg.errors.UniqueViolation as error:
                raise ValueError(f"a key named {key.name!r} exists; revoke it first") from error

    async def list_api_keys(self) -> list[ApiKeyRecord]:
        async with self._cursor() as cur:
            rows = await self._all(cur, "SELECT * FROM api_keys ORDER BY created_at, name")
        return [ApiKeyRecord.from_row(row) for row in rows]

    async def revoke_api_key(self, name: str) -> bool:
        async with self._cursor() as cur:
            row = await self._one(
                cur,
                f"UPDATE api_keys SET revoked_at = {_NOW} WHERE name = %s AND revoked_at IS NULL"
                " RETURNING name",
                (name,),
            )
        return row is not None

    async def find_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        async with self._cursor() as cur:
            row = await self._one(
                cur,
                "SELECT * FROM api_keys WHERE key_hash = %s AND revoked_at IS NULL",
                (key_hash,),
            )
        return None if row is None else ApiKeyRecord.from_row(row)

    async def count_api_keys(self) -> int:
        async with self._cursor() as cur:
            row = await self._one(
                cur, "SELECT count(*) AS n FROM api_keys WHERE revoked_at IS NULL"
            )
        assert row is not None
        return int(row["n"])

    async def touch_api_key(self, name: str) -> None:
        async with self._cursor() as cur:
            await self._all(
                cur,
                f"UPDATE api_keys SET last_used_at = {_NOW} WHERE name = %s"
                " AND revoked_at IS NULL RETURNING name",
                (name,),
            )

    async def shared_secret(self, name: str) -> str:
        """A random secret every replica reads the same: made by whichever asks first."""
        async with self._cursor(transaction=True) as cur:
            await self._all(
                cur,
                "INSERT INTO cache (namespace, key, value, created_at)"
                f" VALUES ('secrets', %s, %s, {_NOW}) ON CONFLICT (namespace, key) DO NOTHING"
                " RETURNING key",
                (name, Jsonb(secrets.token_hex(32))),
            )
            row = await self._one(
                cur, "SELECT value FROM cache WHERE namespace = 'secrets' AND key = %s", (name,)
            )
        assert row is not None
        return str(row["value"])

    async def delete_job(self, job_id: str) -> bool:
        """Delete a job and everything recorded of it (variations, stems, events, deliveries)."""
        async with self._cursor() as cur:
            row = await self._one(cur, "DELETE FROM jobs WHERE id = %s RETURNING id", (job_id,))
        return row is not None

    async def jobs_finished_before(self, before: float, limit: int) -> list[str]:
        """Ids of finished jobs last updated before `before`, oldest first, at most `limit`."""
        async with self._cursor() as cur:
            rows = await self._all(
                cur,
                "SELECT id FROM jobs WHERE status IN ('succeeded', 'failed', 'canceled')"
                " AND updated_at < %s ORDER BY updated_at LIMIT %s",
                (before, limit),
            )
        return [row["id"] for row in rows]
