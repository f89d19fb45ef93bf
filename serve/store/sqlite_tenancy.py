"""The SQLite job store's tenancy: managed API keys, what an owner has in the store (for
admission and `GET /v1/usage`), and deleting songs (on request, or past `jobs.retention_days`).
Mixed into `SQLiteJobStore`, whose one thread and connection it uses."""

from __future__ import annotations

import json
import secrets
import sqlite3
import time

from .mixin_hosts import SQLiteHost
from .tenancy import Admission, ApiKeyRecord, OwnerUsage, check_admission

TENANCY_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    name TEXT NOT NULL,
    owner TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    created_at REAL NOT NULL,
    last_used_at REAL,
    revoked_at REAL,
    quotas TEXT NOT NULL DEFAULT '{}'
);
CREATE UNIQUE INDEX IF NOT EXISTS api_keys_active_name ON api_keys (name)
    WHERE revoked_at IS NULL;
CREATE INDEX IF NOT EXISTS jobs_owner_status ON jobs (owner, status);
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (updated_at)
    WHERE status IN ('succeeded', 'failed', 'canceled');
"""


def migrate_tenancy(db: sqlite3.Connection) -> None:
    """Files written before jobs carried the audio they ask for get the column (0 for them)."""
    columns = {row["name"] for row in db.execute("PRAGMA table_info(jobs)")}
    if "audio_s" not in columns:
        db.execute("ALTER TABLE jobs ADD COLUMN audio_s REAL NOT NULL DEFAULT 0")
    db.executescript(TENANCY_SCHEMA)


def owner_usage(db: sqlite3.Connection, owner: str, day_start: float) -> OwnerUsage:
    row = db.execute(
        "SELECT COALESCE(SUM(status IN ('queued', 'running')), 0) AS active,"
        " COALESCE(SUM(status = 'queued'), 0) AS queued,"
        " COALESCE(SUM(created_at >= ?), 0) AS songs,"
        " COALESCE(SUM(CASE WHEN created_at >= ? THEN audio_s ELSE 0 END), 0) AS audio_s"
        " FROM jobs WHERE owner = ? AND (status IN ('queued', 'running') OR created_at >= ?)",
        (day_start, day_start, owner, day_start),
    ).fetchone()
    return OwnerUsage.from_row(row)


def admit(db: sqlite3.Connection, admission: Admission, owner: str, audio_s: float) -> None:
    """Inside the creating transaction (`BEGIN IMMEDIATE` holds the write lock): refuse the job
    when it would pass a limit."""
    queued = int(db.execute("SELECT COUNT(*) FROM jobs WHERE status = 'queued'").fetchone()[0])
    check_admission(admission, queued, owner_usage(db, owner, admission.day_start), audio_s)


class SQLiteTenancy(SQLiteHost):
    """Needs the host store's `_run`, `_transaction` and `_db`."""

    async def owner_usage(self, owner: str, day_start: float) -> OwnerUsage:
        usage: OwnerUsage = await self._run(lambda: owner_usage(self._db, owner, day_start))
        return usage

    async def add_api_key(self, key: ApiKeyRecord) -> None:
        def add(db: sqlite3.Connection) -> None:
            try:
                db.execute(
                    "INSERT INTO api_keys (name, owner, key_hash, prefix, created_at, quotas)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        key.name,
                        key.owner,
                        key.key_hash,
                        key.prefix,
                        key.created_at,
                        json.dumps(key.quotas),
                    ),
                )
            except sqlite3.IntegrityError as error:
                raise ValueError(f"a key named {key.name!r} exists; revoke it first") from error

        await self._run(self._transaction, add)

    async def list_api_keys(self) -> list[ApiKeyRecord]:
        def select() -> list[ApiKeyRecord]:
            rows = self._db.execute("SELECT * FROM api_keys ORDER BY created_at, name")
            return [ApiKeyRecord.from_row(row) for row in rows]

        keys: list[ApiKeyRecord] = await self._run(select)
        return keys

    async def revoke_api_key(self, name: str) -> bool:
        def revoke(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
                (time.time(), name),
            )
            return cursor.rowcount > 0

        revoked: bool = await self._run(self._transaction, revoke)
        return revoked

    async def find_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        def find() -> ApiKeyRecord | None:
            row = self._db.execute(
                "SELECT * FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL", (key_hash,)
            ).fetchone()
            return None if row is None else ApiKeyRecord.from_row(row)

        found: ApiKeyRecord | None = await self._run(find)
        return found

    async def count_api_keys(self) -> int:
        """Active managed keys (any means the API requires keys)."""

        def count() -> int:
            query = "SELECT COUNT(*) FROM api_keys WHERE revoked_at IS NULL"
            return int(self._db.execute(query).fetchone()[0])

        n: int = await self._run(count)
        return n

    async def touch_api_key(self, name: str) -> None:
        def touch(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE api_keys SET last_used_at = ? WHERE name = ? AND revoked_at IS NULL",
                (time.time(), name),
            )

        await self._run(self._transaction, touch)

    async def shared_secret(self, name: str) -> str:
        """A random secret every replica reads the same: made by whichever asks first."""

        def get_or_make(db: sqlite3.Connection) -> str:
            db.execute(
                "INSERT OR IGNORE INTO cache (namespace, key, value, created_at)"
                " VALUES ('secrets', ?, ?, ?)",
                (name, json.dumps(secrets.token_hex(32)), time.time()),
            )
            row = db.execute(
                "SELECT value FROM cache WHERE namespace = 'secrets' AND key = ?", (name,)
            ).fetchone()
            return str(json.loads(row["value"]))

        secret: str = await self._run(self._transaction, get_or_make)
        return secret

    async def delete_job(self, job_id: str) -> bool:
        """Delete a job and everything recorded of it (variations, stems, events, deliveries)."""

        def delete(db: sqlite3.Connection) -> bool:
            return db.execute("DELETE FROM jobs WHERE id = ?", (job_id,)).rowcount > 0

        deleted: bool = await self._run(self._transaction, delete)
        return deleted

    async def jobs_finished_before(self, before: float, limit: int) -> list[str]:
        """Ids of finished jobs last updated before `before`, oldest first, at most `limit`."""

        def select() -> list[str]:
            rows = self._db.execute(
                "SELECT id FROM jobs WHERE status IN ('succeeded', 'failed', 'canceled')"
                " AND updated_at < ? ORDER BY updated_at LIMIT ?",
                (before, limit),
            )
            return [row["id"] for row in rows]

        ids: list[str] = await self._run(select)
        return ids
