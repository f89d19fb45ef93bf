"""The SQLite job store's webhooks: one row per song that asked for a callback, written in the
transaction that creates the song, claimed under a lease once the song ended (see
serve/workflow/webhooks.py). Mixed into `SQLiteJobStore`, whose one thread and connection it
uses."""

from __future__ import annotations

import sqlite3
import time

from .mixin_hosts import SQLiteHost
from .records import WebhookRecord, new_lease_token, new_webhook_id

WEBHOOKS_SCHEMA = """
CREATE TABLE IF NOT EXISTS webhooks (
    job_id TEXT PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    url TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    lease_token TEXT,
    lease_expires_at REAL,
    last_error TEXT,
    last_status_code INTEGER,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    delivered_at REAL
);
CREATE INDEX IF NOT EXISTS webhooks_due ON webhooks (status, next_attempt_at);
"""


def insert_webhook(db: sqlite3.Connection, job_id: str, url: str, now: float) -> None:
    """Inside the transaction that creates the job: its webhook, due once the job ends."""
    db.execute(
        "INSERT INTO webhooks (job_id, id, url, status, next_attempt_at, created_at, updated_at)"
        " VALUES (?, ?, ?, 'pending', ?, ?, ?)",
        (job_id, new_webhook_id(), url, now, now, now),
    )


class SQLiteWebhooks(SQLiteHost):
    """Needs the host store's `_run`, `_transaction` and `_db`."""

    async def claim_webhook(self, *, lease_s: float) -> WebhookRecord | None:
        """Lease the webhook due first (its song ended, its retry time came, no live lease) with
        a fresh token, counting the attempt; None when none is due."""

        def claim(db: sqlite3.Connection) -> WebhookRecord | None:
            now = time.time()
            row = db.execute(
                "SELECT w.job_id FROM webhooks AS w JOIN jobs AS j ON j.id = w.job_id"
                " WHERE w.status = 'pending' AND w.next_attempt_at <= ?"
                " AND (w.lease_expires_at IS NULL OR w.lease_expires_at < ?)"
                " AND j.status IN ('succeeded', 'failed', 'canceled')"
                " ORDER BY w.next_attempt_at LIMIT 1",
                (now, now),
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE webhooks SET lease_token = ?, lease_expires_at = ?,"
                " attempts = attempts + 1, updated_at = ? WHERE job_id = ?",
                (new_lease_token(), now + lease_s, now, row["job_id"]),
            )
            claimed = db.execute("SELECT * FROM webhooks WHERE job_id = ?", (row["job_id"],))
            return WebhookRecord.from_row(claimed.fetchone())

        result: WebhookRecord | None = await self._run(self._transaction, claim)
        return result

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
        """End a claim: `delivered`, `failed`, `skipped`, or `pending` again with `retry_in_s`.
        False (and nothing written) when `token` no longer holds the claim."""

        def finish(db: sqlite3.Connection) -> bool:
            now = time.time()
            retry_at = None if retry_in_s is None else now + retry_in_s
            updated = db.execute(
                "UPDATE webhooks SET status = ?, next_attempt_at = COALESCE(?, next_attempt_at),"
                " last_error = ?, last_status_code = ?, lease_token = NULL,"
                " lease_expires_at = NULL, updated_at = ?,"
                " delivered_at = CASE WHEN ? = 'delivered' THEN ? ELSE delivered_at END"
                " WHERE job_id = ? AND lease_token = ?",
                (status, retry_at, error, status_code, now, status, now, job_id, token),
            )
            return updated.rowcount > 0

        finished: bool = await self._run(self._transaction, finish)
        return finished

    async def get_webhook(self, job_id: str) -> WebhookRecord | None:
        def select() -> WebhookRecord | None:
            row = self._db.execute("SELECT * FROM webhooks WHERE job_id = ?", (job_id,))
            found = row.fetchone()
            return None if found is None else WebhookRecord.from_row(found)

        result: WebhookRecord | None = await self._run(select)
        return result
