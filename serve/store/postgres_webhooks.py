"""The Postgres job store's webhooks (see sqlite_webhooks.py for the model): claims skip rows
another replica has locked, and every time is the database's clock. Mixed into
`PostgresJobStore`, whose pool and cursors it uses."""

from __future__ import annotations

from typing import Any

import psycopg

from .mixin_hosts import PostgresHost
from .postgres_connect import DB_NOW as _NOW
from .records import WebhookRecord, new_lease_token, new_webhook_id


class PostgresWebhooks(PostgresHost):
    """Needs the host store's `_cursor`, `_one` and `_execute`."""

    async def _insert_webhook(
        self, cur: psycopg.AsyncCursor[dict[str, Any]], job_id: str, url: str
    ) -> None:
        """Inside the transaction that creates the job: its webhook, due once the job ends."""
        await self._execute(
            cur,
            "INSERT INTO webhooks (job_id, id, url, status, next_attempt_at, created_at,"
            f" updated_at) SELECT %s, %s, %s, 'pending', now, now, now FROM (SELECT {_NOW} AS now)"
            " AS clock",
            (job_id, new_webhook_id(), url),
        )

    async def claim_webhook(self, *, lease_s: float) -> WebhookRecord | None:
        async with self._cursor() as cur:
            row = await self._one(
                cur,
                f"UPDATE webhooks SET lease_token = %s, lease_expires_at = {_NOW} + %s,"
                f" attempts = attempts + 1, updated_at = {_NOW}"
                " WHERE job_id = (SELECT w.job_id FROM webhooks AS w JOIN jobs AS j"
                " ON j.id = w.job_id WHERE w.status = 'pending'"
                f" AND w.next_attempt_at <= {_NOW}"
                f" AND (w.lease_expires_at IS NULL OR w.lease_expires_at < {_NOW})"
                " AND j.status IN ('succeeded', 'failed', 'canceled')"
                " ORDER BY w.next_attempt_at LIMIT 1 FOR UPDATE OF w SKIP LOCKED)"
                " RETURNING *",
                (new_lease_token(), lease_s),
            )
        return None if row is None else WebhookRecord.from_row(row)

    async def finish_webhook(
        self,
        job_id: str,
        token: str,
        *,
        status: str,
        retry_in_s: float | None = None,
        error: str | None = None,
        status_code: int | None = None,
    ) -> bool:
        async with self._cursor() as cur:
            row = await self._one(
                cur,
                f"UPDATE webhooks SET status = %s,"
                f" next_attempt_at = COALESCE({_NOW} + %s, next_attempt_at),"
                " last_error = %s, last_status_code = %s, lease_token = NULL,"
                f" lease_expires_at = NULL, updated_at = {_NOW},"
                f" delivered_at = CASE WHEN %s = 'delivered' THEN {_NOW} ELSE delivered_at END"
                " WHERE job_id = %s AND lease_token = %s RETURNING job_id",
                (status, retry_in_s, error, status_code, status, job_id, token),
            )
        return row is not None

    async def get_webhook(self, job_id: str) -> WebhookRecord | None:
        async with self._cursor() as cur:
            row = await self._one(cur, "SELECT * FROM webhooks WHERE job_id = %s", (job_id,))
        return None if row is None else WebhookRecord.from_row(row)
