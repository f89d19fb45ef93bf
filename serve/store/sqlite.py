"""`SQLiteJobStore` — the embedded job store: one SQLite file in WAL mode, shared by every process
of a one-machine Ray cluster.

Writes take `BEGIN IMMEDIATE`, so a claim is atomic across processes. SQLite has no notifications:
`wait_for_events` and `wait_for_work` wait on one poll per store (`sqlite_watch.ChangeWatch`),
which reads the tables only when a commit moved the database's version. The Postgres store is the
one a multi-node cluster uses.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pipeline.song_contracts import TEXT2MUSIC

from .records import (
    ACTIVE_STATUSES,
    JOBS,
    JSON_VARIATION_FIELDS,
    SEARCHED_REQUEST_FIELDS,
    STEMS,
    TERMINAL_EVENTS,
    VARIATION_FIELDS,
    BacklogKey,
    DeliveryRecord,
    EventRecord,
    JobRecord,
    LeasedTable,
    LeaseLost,
    ModelBacklog,
    PoolRenders,
    QueuePlace,
    StemsRecord,
    VariationRecord,
    check_fields,
    decode_cursor,
    encode_cursor,
    exhausted_error,
    new_job_id,
    new_lease_token,
    places_in_line,
    search_words,
)
from .sqlite_tenancy import SQLiteTenancy, admit, migrate_tenancy
from .sqlite_watch import ChangeWatch
from .sqlite_webhooks import WEBHOOKS_SCHEMA, SQLiteWebhooks, insert_webhook
from .tenancy import Admission

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    idempotency_key TEXT,
    status TEXT NOT NULL,
    stage TEXT,
    progress REAL NOT NULL DEFAULT 0,
    request TEXT NOT NULL,
    seed INTEGER NOT NULL,
    lyrics TEXT,
    lyrics_source TEXT,
    tags TEXT,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_token TEXT,
    lease_expires_at REAL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency ON jobs (owner, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_runnable ON jobs (status, lease_expires_at, created_at);
CREATE INDEX IF NOT EXISTS jobs_owner_created ON jobs (owner, created_at DESC, id DESC);
CREATE TABLE IF NOT EXISTS variations (
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    status TEXT NOT NULL,
    model TEXT,
    model_version TEXT,
    seed INTEGER,
    duration_s REAL,
    sample_rate INTEGER,
    loudness_lufs REAL,
    true_peak_dbtp REAL,
    objects TEXT NOT NULL DEFAULT '{}',
    render TEXT NOT NULL DEFAULT '{}',
    error TEXT,
    PRIMARY KEY (job_id, idx)
);
CREATE TABLE IF NOT EXISTS stems (
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    status TEXT NOT NULL,
    progress REAL NOT NULL DEFAULT 0,
    objects TEXT NOT NULL DEFAULT '{}',
    info TEXT NOT NULL DEFAULT '{}',
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_token TEXT,
    lease_expires_at REAL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (job_id, idx)
);
CREATE INDEX IF NOT EXISTS stems_runnable ON stems (status, lease_expires_at, created_at);
CREATE TABLE IF NOT EXISTS deliveries (
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    claims INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_token TEXT,
    lease_expires_at REAL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (job_id, idx, name)
);
CREATE TABLE IF NOT EXISTS cache (
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (namespace, key)
);
CREATE TABLE IF NOT EXISTS events (
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    data TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (job_id, seq)
);
"""


def _append(
    db: sqlite3.Connection, job_id: str, event_type: str, data: dict[str, Any], now: float
) -> int:
    """Append an event to a job's log with the next sequence number (inside a transaction);
    KeyError when there is no such job."""
    if db.execute("SELECT 1 FROM jobs WHERE id = ?", (job_id,)).fetchone() is None:
        raise KeyError(f"no job {job_id}")
    seq: int = db.execute(
        "SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE job_id = ?", (job_id,)
    ).fetchone()[0]
    db.execute(
        "INSERT INTO events (job_id, seq, type, data, created_at) VALUES (?, ?, ?, ?, ?)",
        (job_id, seq, event_type, json.dumps(data), now),
    )
    return seq


_JOBS, _STEMS = JOBS, STEMS


def _match(table: LeasedTable) -> str:
    """The WHERE clause that picks one row of `table` by its key."""
    return table.where("?")


_RUNNABLE = "status IN ('queued', 'running') AND (lease_expires_at IS NULL OR lease_expires_at < ?)"
# A job some conductor is driving now (its lease is live).
_LEASED_JOB = "j.status = 'running' AND j.lease_expires_at >= ?"


def has_runnable_work(db: sqlite3.Connection) -> bool:
    """A queued song or stems job, or one whose lease expired, waits for a conductor."""
    now = time.time()
    return any(
        db.execute(f"SELECT 1 FROM {table} WHERE {_RUNNABLE} LIMIT 1", (now,)).fetchone()
        for table in ("jobs", "stems")
    )


def _claim_row(
    db: sqlite3.Connection,
    table: LeasedTable,
    worker: str,
    lease_s: float,
    max_attempts: int,
    exclude: Collection[tuple[Any, ...]],
) -> tuple[tuple[Any, ...], str] | None:
    """Lease the first runnable row of `table` (whose key is not in `exclude`) to `worker` with a
    fresh token; returns its key and the token. Rows whose attempts are used up are failed on
    the way, with the event the table logs for that."""
    now = time.time()
    keys = ", ".join(table.key)
    exhausted = db.execute(
        f"SELECT {keys}, attempts FROM {table.name} WHERE {_RUNNABLE} AND attempts >= ?",
        (now, max_attempts),
    ).fetchall()
    for row in exhausted:
        error = exhausted_error(table.noun, row["attempts"])
        db.execute(
            f"UPDATE {table.name} SET status = 'failed', error = ?, lease_owner = NULL, "
            f"lease_token = NULL, lease_expires_at = NULL, updated_at = ? WHERE {_match(table)}",
            (json.dumps(error), now, *(row[column] for column in table.key)),
        )
        job_id, event_type, data = table.exhausted_event(row, error)
        _append(db, job_id, event_type, data, now)
    skipped = set(exclude)
    cursor = db.execute(
        f"SELECT {keys} FROM {table.name} WHERE {_RUNNABLE} ORDER BY {table.order}", (now,)
    )
    key = next((tuple(row) for row in cursor if tuple(row) not in skipped), None)
    cursor.close()
    if key is None:
        return None
    token = new_lease_token()
    db.execute(
        f"UPDATE {table.name} SET status = 'running', lease_owner = ?, lease_token = ?, "
        f"lease_expires_at = ?, attempts = attempts + 1, updated_at = ? WHERE {_match(table)}",
        (worker, token, now + lease_s, now, *key),
    )
    return key, token


def _check_lease(
    db: sqlite3.Connection, table: LeasedTable, key: tuple[Any, ...], token: str
) -> None:
    row = db.execute(f"SELECT lease_token FROM {table.name} WHERE {_match(table)}", key).fetchone()
    if row is None or row["lease_token"] != token:
        name = "/".join(str(part) for part in key)
        raise LeaseLost(f"{table.noun} {name} was claimed again; this claim may not write to it")


def _renew_lease(
    db: sqlite3.Connection,
    table: LeasedTable,
    key: tuple[Any, ...],
    token: str,
    lease_s: float,
) -> None:
    _check_lease(db, table, key, token)
    db.execute(
        f"UPDATE {table.name} SET lease_expires_at = ? WHERE {_match(table)}",
        (time.time() + lease_s, *key),
    )


def _release_lease(
    db: sqlite3.Connection, table: LeasedTable, key: tuple[Any, ...], token: str
) -> None:
    """Hand a running row back (a clean stop: the attempt is not counted)."""
    db.execute(
        f"UPDATE {table.name} SET lease_owner = NULL, lease_token = NULL, "
        "lease_expires_at = NULL, attempts = MAX(attempts - 1, 0), updated_at = ? "
        f"WHERE {_match(table)} AND lease_token = ? AND status = 'running'",
        (time.time(), *key, token),
    )


def _set_fields(
    db: sqlite3.Connection, table: LeasedTable, key: tuple[Any, ...], fields: dict[str, Any]
) -> None:
    """Write `fields` (JSON where the table keeps JSON); a terminal status ends the lease."""
    check_fields(table.kind, fields, table.fields)
    fields = {"updated_at": time.time(), **fields}
    if fields.get("status") in table.terminal:
        fields.update(lease_owner=None, lease_token=None, lease_expires_at=None)
    values = [json.dumps(v) if k in table.json_fields else v for k, v in fields.items()]
    assignments = ", ".join(f"{name} = ?" for name in fields)
    db.execute(f"UPDATE {table.name} SET {assignments} WHERE {_match(table)}", (*values, *key))


def _loads(raw: str | None) -> Any:
    return None if raw is None else json.loads(raw)


class SQLiteJobStore(SQLiteTenancy, SQLiteWebhooks):
    """`JobStore` on one SQLite file, shared by every replica on the machine.

    Every call runs on one dedicated thread (sqlite3 connections are not shared across threads and
    a busy database must never block the event loop); writes use `BEGIN IMMEDIATE` so claims are
    atomic across processes.
    """

    def __init__(self, path: str | Path, *, poll_interval_s: float = 0.1) -> None:
        self._changes = ChangeWatch(self._run_on_db, has_runnable_work, poll_interval_s)
        self._path = Path(path)
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-jobs")
        self._connection: sqlite3.Connection | None = None
        self._executor.submit(self._open).result()

    # -- plumbing --------------------------------------------------------------------------------

    def _open(self) -> None:
        connection = sqlite3.connect(self._path, timeout=30.0, isolation_level=None)
        connection.row_factory = sqlite3.Row
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.execute("PRAGMA foreign_keys=ON")
        connection.executescript(_SCHEMA)
        for table in (_JOBS, _STEMS):  # files written before claims carried tokens
            info = connection.execute(f"PRAGMA table_info({table.name})")
            columns = {row["name"] for row in info}
            if "lease_token" not in columns:
                connection.execute(f"ALTER TABLE {table.name} ADD COLUMN lease_token TEXT")
        migrate_tenancy(connection)
        connection.executescript(WEBHOOKS_SCHEMA)
        self._connection = connection

    @property
    def _db(self) -> sqlite3.Connection:
        assert self._connection is not None, "job store is closed"
        return self._connection

    async def _run(self, fn: Any, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    async def _run_on_db(self, fn: Any, *args: Any) -> Any:
        """`fn(connection, *args)` on the database thread (the connection read there)."""
        return await self._run(lambda: fn(self._db, *args))

    def _transaction(self, fn: Any, *args: Any) -> Any:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            result = fn(db, *args)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return result

    # -- reads -----------------------------------------------------------------------------------

    def _job_from_row(self, db: sqlite3.Connection, row: sqlite3.Row) -> JobRecord:
        variations = [
            VariationRecord(
                index=v["idx"],
                status=v["status"],
                model=v["model"],
                model_version=v["model_version"],
                seed=v["seed"],
                duration_s=v["duration_s"],
                sample_rate=v["sample_rate"],
                loudness_lufs=v["loudness_lufs"],
                true_peak_dbtp=v["true_peak_dbtp"],
                objects=json.loads(v["objects"]),
                render=json.loads(v["render"]),
                error=_loads(v["error"]),
            )
            for v in db.execute(
                "SELECT * FROM variations WHERE job_id = ? ORDER BY idx", (row["id"],)
            )
        ]
        return JobRecord(
            id=row["id"],
            owner=row["owner"],
            status=row["status"],
            stage=row["stage"],
            progress=row["progress"],
            request=json.loads(row["request"]),
            seed=row["seed"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            attempts=row["attempts"],
            lease_owner=row["lease_owner"],
            lease_token=row["lease_token"],
            lease_expires_at=row["lease_expires_at"],
            idempotency_key=row["idempotency_key"],
            lyrics=row["lyrics"],
            lyrics_source=_loads(row["lyrics_source"]),
            tags=_loads(row["tags"]),
            error=_loads(row["error"]),
            variations=variations,
        )

    def _get(self, job_id: str) -> JobRecord | None:
        row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else self._job_from_row(self._db, row)

    async def get_job(self, job_id: str) -> JobRecord | None:
        result: JobRecord | None = await self._run(self._get, job_id)
        return result

    async def count_jobs(self, status: str) -> int:
        def count() -> int:
            row = self._db.execute("SELECT COUNT(*) FROM jobs WHERE status = ?", (status,))
            return int(row.fetchone()[0])

        result: int = await self._run(count)
        return result

    def _list(
        self, owner: str, limit: int, cursor: str | None, search: str | None
    ) -> tuple[list[JobRecord], str | None]:
        where = "owner = ?"
        params: list[object] = [owner]
        if cursor:
            created_at, job_id = decode_cursor(cursor)
            where += " AND (created_at < ? OR (created_at = ? AND id < ?))"
            params += [created_at, created_at, job_id]
        words = search_words(search)
        if words:
            text = " || ' ' || ".join(
                f"coalesce(json_extract(request, '$.{name}'), '')"
                for name in SEARCHED_REQUEST_FIELDS
            )
            # lower() folds ASCII only in SQLite; Postgres folds every script.
            where += "".join(f" AND instr(lower({text}), ?) > 0" for _ in words)
            params += words
        rows = self._db.execute(
            f"SELECT * FROM jobs WHERE {where} ORDER BY created_at DESC, id DESC LIMIT ?",
            (*params, limit + 1),
        ).fetchall()
        jobs = [self._job_from_row(self._db, row) for row in rows[:limit]]
        next_cursor = encode_cursor(jobs[-1].created_at, jobs[-1].id) if len(rows) > limit else None
        return jobs, next_cursor

    async def list_jobs(
        self, owner: str, *, limit: int, cursor: str | None = None, search: str | None = None
    ) -> tuple[list[JobRecord], str | None]:
        result: tuple[list[JobRecord], str | None] = await self._run(
            self._list, owner, limit, cursor, search
        )
        return result

    def _events_after(self, job_id: str, after_seq: int, limit: int) -> list[EventRecord]:
        rows = self._db.execute(
            "SELECT seq, type, data, created_at FROM events WHERE job_id = ? AND seq > ? "
            "ORDER BY seq LIMIT ?",
            (job_id, after_seq, limit),
        ).fetchall()
        return [
            EventRecord(
                seq=r["seq"], type=r["type"], data=json.loads(r["data"]), created_at=r["created_at"]
            )
            for r in rows
        ]

    async def events_after(
        self, job_id: str, after_seq: int, limit: int = 500
    ) -> list[EventRecord]:
        result: list[EventRecord] = await self._run(self._events_after, job_id, after_seq, limit)
        return result

    async def wait_for_events(
        self, job_id: str, after_seq: int, timeout: float
    ) -> list[EventRecord]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            events = await self.events_after(job_id, after_seq)
            remaining = deadline - loop.time()
            if events or remaining <= 0:
                return events
            if not await self._changes.events(job_id, after_seq, remaining):
                return []

    async def wait_for_work(self, timeout: float) -> None:
        if not await self._run_on_db(has_runnable_work):
            await self._changes.work(timeout)

    # -- writes ----------------------------------------------------------------------------------

    def _create(
        self,
        db: sqlite3.Connection,
        owner: str,
        request: dict[str, Any],
        seed: int,
        variations: int,
        idempotency_key: str | None,
        audio_s: float,
        admission: Admission | None,
        callback_url: str | None,
    ) -> tuple[JobRecord, bool]:
        if idempotency_key is not None:
            row = db.execute(
                "SELECT * FROM jobs WHERE owner = ? AND idempotency_key = ?",
                (owner, idempotency_key),
            ).fetchone()
            if row is not None:
                return self._job_from_row(db, row), False
        if admission is not None:
            admit(db, admission, owner, audio_s)
        now = time.time()
        job_id = new_job_id()
        db.execute(
            "INSERT INTO jobs (id, owner, idempotency_key, status, stage, progress, request, seed,"
            " audio_s, created_at, updated_at) VALUES (?, ?, ?, 'queued', NULL, 0, ?, ?, ?, ?, ?)",
            (job_id, owner, idempotency_key, json.dumps(request), seed, audio_s, now, now),
        )
        db.executemany(
            "INSERT INTO variations (job_id, idx, status, seed) VALUES (?, ?, 'queued', ?)",
            [(job_id, k, seed + k) for k in range(variations)],
        )
        if callback_url is not None:
            insert_webhook(db, job_id, callback_url, now)
        _append(db, job_id, "stage", {"stage": "queued"}, now)
        row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return self._job_from_row(db, row), True

    async def create_job(
        self,
        *,
        owner: str,
        request: dict[str, Any],
        seed: int,
        variations: int,
        idempotency_key: str | None = None,
        audio_s: float = 0.0,
        admission: Admission | None = None,
        callback_url: str | None = None,
    ) -> tuple[JobRecord, bool]:
        result: tuple[JobRecord, bool] = await self._run(
            self._transaction,
            self._create,
            owner,
            request,
            seed,
            variations,
            idempotency_key,
            audio_s,
            admission,
            callback_url,
        )
        return result

    def _claim(
        self,
        db: sqlite3.Connection,
        worker: str,
        lease_s: float,
        max_attempts: int,
        exclude: Collection[str],
    ) -> JobRecord | None:
        claimed = _claim_row(db, _JOBS, worker, lease_s, max_attempts, {(i,) for i in exclude})
        if claimed is None:
            return None
        row = db.execute("SELECT * FROM jobs WHERE id = ?", claimed[0]).fetchone()
        return self._job_from_row(db, row)

    async def claim_next(
        self,
        worker: str,
        *,
        lease_s: float,
        max_attempts: int,
        exclude: Collection[str] = (),
    ) -> JobRecord | None:
        result: JobRecord | None = await self._run(
            self._transaction, self._claim, worker, lease_s, max_attempts, tuple(exclude)
        )
        return result

    async def renew_lease(self, job_id: str, token: str, *, lease_s: float) -> None:
        await self._run(self._transaction, _renew_lease, _JOBS, (job_id,), token, lease_s)

    async def release(self, job_id: str, token: str) -> None:
        await self._run(self._transaction, _release_lease, _JOBS, (job_id,), token)

    def _update_job(
        self, db: sqlite3.Connection, job_id: str, token: str, fields: dict[str, Any]
    ) -> None:
        _check_lease(db, _JOBS, (job_id,), token)
        _set_fields(db, _JOBS, (job_id,), fields)

    async def update_job(self, job_id: str, token: str, **fields: Any) -> None:
        await self._run(self._transaction, self._update_job, job_id, token, fields)

    def _update_variation(
        self,
        db: sqlite3.Connection,
        job_id: str,
        index: int,
        token: str,
        fields: dict[str, Any],
    ) -> None:
        check_fields("variation", fields, VARIATION_FIELDS)
        _check_lease(db, _JOBS, (job_id,), token)
        values = [json.dumps(v) if k in JSON_VARIATION_FIELDS else v for k, v in fields.items()]
        assignments = ", ".join(f"{name} = ?" for name in fields)
        db.execute(
            f"UPDATE variations SET {assignments} WHERE job_id = ? AND idx = ?",
            (*values, job_id, index),
        )
        db.execute("UPDATE jobs SET updated_at = ? WHERE id = ?", (time.time(), job_id))

    async def update_variation(self, job_id: str, index: int, token: str, **fields: Any) -> None:
        await self._run(self._transaction, self._update_variation, job_id, index, token, fields)

    def _cancel(self, db: sqlite3.Connection, job_id: str) -> JobRecord | None:
        row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            return None
        if row["status"] in ACTIVE_STATUSES:
            _set_fields(db, _JOBS, (job_id,), {"status": "canceled", "stage": "canceled"})
            db.execute(
                "UPDATE variations SET status = 'canceled' "
                "WHERE job_id = ? AND status IN ('queued', 'running')",
                (job_id,),
            )
            _append(db, job_id, TERMINAL_EVENTS["canceled"], {"status": "canceled"}, time.time())
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return self._job_from_row(db, row)

    async def cancel_job(self, job_id: str) -> JobRecord | None:
        result: JobRecord | None = await self._run(self._transaction, self._cancel, job_id)
        return result

    # -- load -------------------------------------------------------------------------------------

    def _renders_by_pool(self) -> dict[str, PoolRenders]:
        rows = self._db.execute(
            "SELECT json_extract(v.render, '$.pool') AS pool, COUNT(*) AS renders, "
            "TOTAL(json_extract(j.request, '$.duration_s')) AS audio_s "
            "FROM jobs AS j JOIN variations AS v ON v.job_id = j.id "
            f"WHERE {_LEASED_JOB} AND v.status = 'running' "
            "AND json_extract(v.render, '$.pool') IS NOT NULL GROUP BY pool",
            (time.time(),),
        ).fetchall()
        return {row["pool"]: PoolRenders(row["renders"], float(row["audio_s"])) for row in rows}

    async def renders_by_pool(self) -> dict[str, PoolRenders]:
        result: dict[str, PoolRenders] = await self._run(self._renders_by_pool)
        return result

    def _queue_place(self, job_id: str) -> QueuePlace | None:
        db, now = self._db, time.time()
        me = db.execute(
            "SELECT created_at FROM jobs WHERE id = ? AND status = 'queued'", (job_id,)
        ).fetchone()
        if me is None:
            return None
        # Runnable rows ahead in claim order (JOBS.order: created_at, id).
        ahead = "(j.created_at < ? OR (j.created_at = ? AND j.id < ?))"
        runnable = (
            "j.status IN ('queued', 'running') "
            "AND (j.lease_expires_at IS NULL OR j.lease_expires_at < ?)"
        )
        mine = (me["created_at"], me["created_at"], job_id)
        position = db.execute(
            f"SELECT COUNT(*) FROM jobs AS j WHERE {runnable} AND {ahead}", (now, *mine)
        ).fetchone()[0]
        audio_s = db.execute(
            "SELECT TOTAL(json_extract(j.request, '$.duration_s')) "
            "FROM jobs AS j JOIN variations AS v ON v.job_id = j.id "
            "WHERE v.status IN ('queued', 'running') AND json_extract(v.render, '$.raw') IS NULL "
            f"AND ({_LEASED_JOB} OR ({runnable} AND {ahead}))",
            (now, now, *mine),
        ).fetchone()[0]
        return QueuePlace(position=int(position), audio_s_ahead=float(audio_s))

    async def queue_place(self, job_id: str) -> QueuePlace | None:
        result: QueuePlace | None = await self._run(self._queue_place, job_id)
        return result

    def _queue_places(self) -> dict[str, QueuePlace]:
        now = time.time()
        rows = self._db.execute(
            "SELECT j.id, j.status, "
            f"({_LEASED_JOB}) AS leased, "
            "(j.lease_expires_at IS NULL OR j.lease_expires_at < ?) AS runnable, "
            "TOTAL(CASE WHEN v.status IN ('queued', 'running') "
            "AND json_extract(v.render, '$.raw') IS NULL "
            "THEN json_extract(j.request, '$.duration_s') ELSE 0 END) AS audio_s "
            "FROM jobs AS j LEFT JOIN variations AS v ON v.job_id = j.id "
            "WHERE j.status IN ('queued', 'running') "
            "GROUP BY j.id ORDER BY j.created_at, j.id",
            (now, now),
        ).fetchall()
        return places_in_line(rows)

    async def queue_places(self) -> dict[str, QueuePlace]:
        result: dict[str, QueuePlace] = await self._run(self._queue_places)
        return result

    def _backlog_by_request(self) -> dict[BacklogKey, ModelBacklog]:
        rendering = (  # never NULL: a released job has no lease expiry
            "(j.status = 'running' AND j.lease_expires_at IS NOT NULL "
            "AND j.lease_expires_at >= :now AND v.status = 'running')"
        )
        duration = "COALESCE(json_extract(j.request, '$.duration_s'), 0)"
        rows = self._db.execute(
            "SELECT COALESCE(json_extract(j.request, '$.model'), 'auto') AS model, "
            f"COALESCE(json_extract(j.request, '$.edit.task'), '{TEXT2MUSIC}') AS task, "
            "COALESCE(json_extract(j.request, '$.language'), 'en') AS language, "
            # As BacklogKey.of_request reads them.
            "COALESCE(json_extract(j.request, '$.lora.ref'), json_extract(j.request, '$.lora.id'))"
            " IS NOT NULL AS lora, "
            "json_extract(j.request, '$.reference.key') IS NOT NULL AS reference, "
            f"SUM(NOT {rendering}) AS waiting, "
            f"TOTAL(CASE WHEN {rendering} THEN 0 ELSE {duration} END) AS waiting_audio_s, "
            f"SUM({rendering}) AS rendering, "
            f"TOTAL(CASE WHEN {rendering} THEN {duration} ELSE 0 END) AS rendering_audio_s "
            "FROM jobs AS j JOIN variations AS v ON v.job_id = j.id "
            "WHERE j.status IN ('queued', 'running') AND v.status IN ('queued', 'running') "
            "AND json_extract(v.render, '$.raw') IS NULL "
            # By position, not by name: `model` would name the variations' own model column.
            "GROUP BY 1, 2, 3, 4, 5",
            {"now": time.time()},
        ).fetchall()
        return {BacklogKey.from_row(row): ModelBacklog.from_row(row) for row in rows}

    async def backlog_by_request(self) -> dict[BacklogKey, ModelBacklog]:
        result: dict[BacklogKey, ModelBacklog] = await self._run(self._backlog_by_request)
        return result

    def _append_event(
        self,
        db: sqlite3.Connection,
        job_id: str,
        event_type: str,
        data: dict[str, Any],
        token: str | None,
        job_fields: dict[str, Any] | None,
    ) -> int:
        if token is not None:
            _check_lease(db, _JOBS, (job_id,), token)
        if job_fields:
            _set_fields(db, _JOBS, (job_id,), job_fields)
        return _append(db, job_id, event_type, data, time.time())

    async def append_event(
        self,
        job_id: str,
        event_type: str,
        data: dict[str, Any],
        *,
        token: str | None = None,
        job_fields: dict[str, Any] | None = None,
    ) -> int:
        seq: int = await self._run(
            self._transaction,
            self._append_event,
            job_id,
            event_type,
            data,
            token,
            job_fields,
        )
        return seq

    # -- stems ----------------------------------------------------------------------------------

    @staticmethod
    def _stems_from_row(row: sqlite3.Row) -> StemsRecord:
        return StemsRecord(
            job_id=row["job_id"],
            index=row["idx"],
            status=row["status"],
            progress=row["progress"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            attempts=row["attempts"],
            lease_owner=row["lease_owner"],
            lease_token=row["lease_token"],
            lease_expires_at=row["lease_expires_at"],
            objects=json.loads(row["objects"]),
            info=json.loads(row["info"]),
            error=_loads(row["error"]),
        )

    def _get_stems(self, db: sqlite3.Connection, job_id: str, index: int) -> StemsRecord | None:
        row = db.execute(
            "SELECT * FROM stems WHERE job_id = ? AND idx = ?", (job_id, index)
        ).fetchone()
        return None if row is None else self._stems_from_row(row)

    def _request_stems(
        self, db: sqlite3.Connection, job_id: str, index: int
    ) -> tuple[StemsRecord, bool]:
        existing = self._get_stems(db, job_id, index)
        if existing is not None and existing.status != "failed":
            return existing, False
        if db.execute("SELECT 1 FROM jobs WHERE id = ?", (job_id,)).fetchone() is None:
            raise KeyError(f"no job {job_id}")
        now = time.time()
        db.execute(
            "INSERT INTO stems (job_id, idx, status, progress, created_at, updated_at) "
            "VALUES (?, ?, 'queued', 0, ?, ?) ON CONFLICT (job_id, idx) DO UPDATE SET "
            "status = 'queued', progress = 0, objects = '{}', info = '{}', error = NULL, "
            "attempts = 0, lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, "
            "created_at = ?, "
            "updated_at = ?",
            (job_id, index, now, now, now, now),
        )
        _append(db, job_id, "stems", {"variation": index, "status": "queued"}, now)
        record = self._get_stems(db, job_id, index)
        assert record is not None
        return record, True

    async def request_stems(self, job_id: str, index: int) -> tuple[StemsRecord, bool]:
        result: tuple[StemsRecord, bool] = await self._run(
            self._transaction, self._request_stems, job_id, index
        )
        return result

    async def get_stems(self, job_id: str, index: int) -> StemsRecord | None:
        result: StemsRecord | None = await self._run(self._get_stems, self._db, job_id, index)
        return result

    async def list_stems(self, job_id: str) -> list[StemsRecord]:
        def read() -> list[StemsRecord]:
            rows = self._db.execute(
                "SELECT * FROM stems WHERE job_id = ? ORDER BY idx", (job_id,)
            ).fetchall()
            return [self._stems_from_row(row) for row in rows]

        result: list[StemsRecord] = await self._run(read)
        return result

    def _claim_stems(
        self,
        db: sqlite3.Connection,
        worker: str,
        lease_s: float,
        max_attempts: int,
        exclude: Collection[tuple[str, int]],
    ) -> StemsRecord | None:
        claimed = _claim_row(db, _STEMS, worker, lease_s, max_attempts, exclude)
        return None if claimed is None else self._get_stems(db, *claimed[0])

    async def claim_next_stems(
        self,
        worker: str,
        *,
        lease_s: float,
        max_attempts: int,
        exclude: Collection[tuple[str, int]] = (),
    ) -> StemsRecord | None:
        result: StemsRecord | None = await self._run(
            self._transaction, self._claim_stems, worker, lease_s, max_attempts, tuple(exclude)
        )
        return result

    async def renew_stems_lease(
        self, job_id: str, index: int, token: str, *, lease_s: float
    ) -> None:
        await self._run(self._transaction, _renew_lease, _STEMS, (job_id, index), token, lease_s)

    async def release_stems(self, job_id: str, index: int, token: str) -> None:
        await self._run(self._transaction, _release_lease, _STEMS, (job_id, index), token)

    def _update_stems(
        self,
        db: sqlite3.Connection,
        job_id: str,
        index: int,
        token: str,
        fields: dict[str, Any],
        event: tuple[str, dict[str, Any]] | None,
    ) -> None:
        _check_lease(db, _STEMS, (job_id, index), token)
        _set_fields(db, _STEMS, (job_id, index), fields)
        if event is not None:
            _append(db, job_id, event[0], event[1], time.time())

    async def update_stems(
        self,
        job_id: str,
        index: int,
        token: str,
        *,
        event: tuple[str, dict[str, Any]] | None = None,
        **fields: Any,
    ) -> None:
        await self._run(self._transaction, self._update_stems, job_id, index, token, fields, event)

    # -- files made on request ------------------------------------------------------------------

    async def add_variation_object(self, job_id: str, index: int, name: str, key: str) -> None:
        def add(db: sqlite3.Connection) -> None:
            row = db.execute(
                "SELECT objects FROM variations WHERE job_id = ? AND idx = ? "
                "AND status = 'succeeded'",
                (job_id, index),
            ).fetchone()
            if row is None:
                raise KeyError(f"no finished variation {index} of {job_id}")
            objects = {**json.loads(row["objects"]), name: key}
            db.execute(
                "UPDATE variations SET objects = ? WHERE job_id = ? AND idx = ?",
                (json.dumps(objects), job_id, index),
            )

        await self._run(self._transaction, add)

    async def claim_delivery(
        self, job_id: str, index: int, name: str, worker: str, *, lease_s: float
    ) -> str | None:
        def claim(db: sqlite3.Connection) -> str | None:
            now = time.time()
            row = db.execute(
                "SELECT status, lease_expires_at FROM deliveries "
                "WHERE job_id = ? AND idx = ? AND name = ?",
                (job_id, index, name),
            ).fetchone()
            if row is not None and (
                row["status"] == "delivered"
                or (row["lease_expires_at"] is not None and row["lease_expires_at"] >= now)
            ):
                return None
            if db.execute("SELECT 1 FROM jobs WHERE id = ?", (job_id,)).fetchone() is None:
                raise KeyError(f"no job {job_id}")
            token = new_lease_token()
            db.execute(
                "INSERT INTO deliveries (job_id, idx, name, status, claims, lease_owner, "
                "lease_token, lease_expires_at, created_at, updated_at) "
                "VALUES (?, ?, ?, 'making', 1, ?, ?, ?, ?, ?) "
                "ON CONFLICT (job_id, idx, name) DO UPDATE SET status = 'making', "
                "claims = claims + 1, lease_owner = excluded.lease_owner, "
                "lease_token = excluded.lease_token, "
                "lease_expires_at = excluded.lease_expires_at, updated_at = excluded.updated_at",
                (job_id, index, name, worker, token, now + lease_s, now, now),
            )
            return token

        result: str | None = await self._run(self._transaction, claim)
        return result

    async def finish_delivery(
        self, job_id: str, index: int, name: str, token: str, *, delivered: bool
    ) -> None:
        def finish(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE deliveries SET status = ?, lease_owner = NULL, lease_token = NULL, "
                "lease_expires_at = NULL, updated_at = ? "
                "WHERE job_id = ? AND idx = ? AND name = ? AND lease_token = ?",
                ("delivered" if delivered else "open", time.time(), job_id, index, name, token),
            )

        await self._run(self._transaction, finish)

    async def get_delivery(self, job_id: str, index: int, name: str) -> DeliveryRecord | None:
        def read() -> DeliveryRecord | None:
            row = self._db.execute(
                "SELECT * FROM deliveries WHERE job_id = ? AND idx = ? AND name = ?",
                (job_id, index, name),
            ).fetchone()
            return None if row is None else DeliveryRecord.from_row(row)

        result: DeliveryRecord | None = await self._run(read)
        return result

    async def cache_get(self, namespace: str, key: str) -> Any | None:
        def read() -> Any | None:
            row = self._db.execute(
                "SELECT value FROM cache WHERE namespace = ? AND key = ?", (namespace, key)
            ).fetchone()
            return None if row is None else json.loads(row["value"])

        return await self._run(read)

    async def cache_put(self, namespace: str, key: str, value: Any) -> None:
        def write(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT OR REPLACE INTO cache (namespace, key, value, created_at) "
                "VALUES (?, ?, ?, ?)",
                (namespace, key, json.dumps(value), time.time()),
            )

        await self._run(self._transaction, write)

    async def close(self) -> None:
        await self._changes.close()

        def _close() -> None:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

        await self._run(_close)
        self._executor.shutdown(wait=True)
