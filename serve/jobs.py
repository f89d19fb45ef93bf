"""The job store: the durable state of every song job, its variations and its event log.

A job accepted with 202 lives here, never only in a replica's memory. Conductors claim jobs with a
lease (owner + expiry) and renew it while they work; a job whose lease expired is taken over by the
next claim, and a job claimed `max_attempts` times fails with a reason instead of crash-looping.
Writes that belong to a claimed job are fenced by the lease owner: a conductor that lost its lease
gets `LeaseLost` and stops, so two conductors never interleave results.

The event log is append-only per job with a dense sequence number: SSE streams replay it to late
subscribers and resume from `Last-Event-ID`.

Stems are jobs of their own, one per (song, variation), leased and counted the same way, so a
stems request accepted with 202 survives its worker too. Their events go to the song's log, which
is what a client already listens to.

`JobStore` is the interface; `SQLiteJobStore` the embedded implementation (one file, WAL mode, safe
across the processes of a local Ray cluster). A Postgres implementation plugs in behind the same
methods.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

JOB_STATUSES = ("queued", "running", "succeeded", "failed", "canceled")
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "canceled"})
VARIATION_STATUSES = ("queued", "running", "succeeded", "failed")
ACTIVE_STEMS_STATUSES = frozenset({"queued", "running"})
FINISHED_STEMS_STATUSES = frozenset({"succeeded", "failed"})


class LeaseLost(RuntimeError):
    """The caller no longer holds the job's lease: another conductor took it over."""


@dataclass(frozen=True)
class VariationRecord:
    index: int
    status: str = "queued"
    model: str | None = None
    model_version: str | None = None
    seed: int | None = None
    duration_s: float | None = None
    sample_rate: int | None = None
    loudness_lufs: float | None = None
    true_peak_dbtp: float | None = None
    objects: dict[str, str] = field(default_factory=dict)  # "m4a"/"mp3"/…/"peaks" → object key
    render: dict[str, Any] = field(default_factory=dict)  # replica, timings (diagnostics)
    error: dict[str, Any] | None = None


@dataclass(frozen=True)
class JobRecord:
    id: str
    owner: str
    status: str
    stage: str | None
    progress: float
    request: dict[str, Any]
    seed: int
    created_at: float
    updated_at: float
    attempts: int = 0
    lease_owner: str | None = None
    lease_expires_at: float | None = None
    idempotency_key: str | None = None
    lyrics: str | None = None
    lyrics_source: dict[str, Any] | None = None
    tags: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    variations: list[VariationRecord] = field(default_factory=list)

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


@dataclass(frozen=True)
class StemsRecord:
    """The stems job of one variation."""

    job_id: str
    index: int  # the variation's
    status: str
    progress: float
    created_at: float
    updated_at: float
    attempts: int = 0
    lease_owner: str | None = None
    lease_expires_at: float | None = None
    objects: dict[str, dict[str, str]] = field(default_factory=dict)  # stem → format → key
    info: dict[str, Any] = field(default_factory=dict)  # method, separator, provenance, timings
    error: dict[str, Any] | None = None

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STEMS_STATUSES


@dataclass(frozen=True)
class EventRecord:
    seq: int
    type: str
    data: dict[str, Any]
    created_at: float


class JobStore(Protocol):
    """Durable job state. All methods are safe to call from many processes at once."""

    async def create_job(
        self,
        *,
        owner: str,
        request: dict[str, Any],
        seed: int,
        variations: int,
        idempotency_key: str | None = None,
    ) -> tuple[JobRecord, bool]:
        """Insert a queued job; with an idempotency key already used by `owner`, return that job.
        The bool says whether a job was created."""
        ...

    async def get_job(self, job_id: str) -> JobRecord | None: ...

    async def count_jobs(self, status: str) -> int:
        """How many jobs are in `status` (admission control reads the queue depth)."""
        ...

    async def list_jobs(
        self, owner: str, *, limit: int, cursor: str | None = None
    ) -> tuple[list[JobRecord], str | None]:
        """Newest first; returns the page and the cursor of the next page (None at the end)."""
        ...

    async def claim_next(
        self, lease_owner: str, *, lease_s: float, max_attempts: int
    ) -> JobRecord | None:
        """Atomically lease the oldest runnable job (queued, or running with an expired lease).
        Jobs whose attempts are exhausted are failed on the way, with an `error` event."""
        ...

    async def renew_lease(self, job_id: str, lease_owner: str, *, lease_s: float) -> None:
        """Extend the lease; raises LeaseLost when another owner holds it."""
        ...

    async def release(self, job_id: str, lease_owner: str) -> None:
        """Hand a running job back for any conductor to claim now (a clean stop, not a crash:
        the attempt is not counted). A no-op when `lease_owner` no longer holds it."""
        ...

    async def update_job(self, job_id: str, lease_owner: str, **fields: Any) -> None:
        """Set job fields (stage results, status, progress) under the lease; raises LeaseLost."""
        ...

    async def update_variation(
        self, job_id: str, index: int, lease_owner: str, **fields: Any
    ) -> None:
        """Set variation fields under the job's lease; raises LeaseLost."""
        ...

    async def append_event(
        self,
        job_id: str,
        event_type: str,
        data: dict[str, Any],
        *,
        lease_owner: str | None = None,
        job_fields: dict[str, Any] | None = None,
    ) -> int:
        """Append an event (and optionally update job fields in the same transaction, fenced by
        `lease_owner`); returns its sequence number."""
        ...

    async def events_after(
        self, job_id: str, after_seq: int, limit: int = 500
    ) -> list[EventRecord]:
        """Events with seq > after_seq, oldest first."""
        ...

    async def request_stems(self, job_id: str, index: int) -> tuple[StemsRecord, bool]:
        """Queue the stems of a variation, with a `stems` event on the song's log. A queued,
        running or finished stems job is returned as it is; a failed one is queued again. The
        bool says whether a job was queued."""
        ...

    async def get_stems(self, job_id: str, index: int) -> StemsRecord | None: ...

    async def list_stems(self, job_id: str) -> list[StemsRecord]:
        """Every stems job of a song, by variation."""
        ...

    async def claim_next_stems(
        self, lease_owner: str, *, lease_s: float, max_attempts: int
    ) -> StemsRecord | None:
        """Lease the oldest runnable stems job, as `claim_next` does for songs (exhausted ones
        fail on the way, with a `stems` event)."""
        ...

    async def renew_stems_lease(
        self, job_id: str, index: int, lease_owner: str, *, lease_s: float
    ) -> None:
        """Extend a stems lease; raises LeaseLost when another owner holds it."""
        ...

    async def release_stems(self, job_id: str, index: int, lease_owner: str) -> None:
        """Hand a running stems job back (a clean stop: the attempt is not counted)."""
        ...

    async def update_stems(
        self,
        job_id: str,
        index: int,
        lease_owner: str,
        *,
        event: tuple[str, dict[str, Any]] | None = None,
        **fields: Any,
    ) -> None:
        """Set stems fields under its lease, and append `event` (type, data) to the song's log in
        the same transaction; raises LeaseLost."""
        ...

    async def cache_get(self, namespace: str, key: str) -> Any | None:
        """A value `cache_put` stored under (namespace, key), or None."""
        ...

    async def cache_put(self, namespace: str, key: str, value: Any) -> None:
        """Store a JSON-serialisable value under (namespace, key), replacing any older one."""
        ...

    async def close(self) -> None: ...


# --------------------------------------------------------------------------------------------------

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
    lease_expires_at REAL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (job_id, idx)
);
CREATE INDEX IF NOT EXISTS stems_runnable ON stems (status, lease_expires_at, created_at);
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

_JSON_JOB_FIELDS = frozenset({"request", "lyrics_source", "tags", "error"})
_JOB_FIELDS = frozenset(
    {"status", "stage", "progress", "lyrics", "lyrics_source", "tags", "error", "updated_at"}
)
_JSON_VARIATION_FIELDS = frozenset({"objects", "render", "error"})
_VARIATION_FIELDS = frozenset(
    {
        "status",
        "model",
        "model_version",
        "seed",
        "duration_s",
        "sample_rate",
        "loudness_lufs",
        "true_peak_dbtp",
        "objects",
        "render",
        "error",
    }
)


def _append(
    db: sqlite3.Connection, job_id: str, event_type: str, data: dict[str, Any], now: float
) -> int:
    """Append an event to a job's log with the next sequence number (inside a transaction)."""
    seq: int = db.execute(
        "SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE job_id = ?", (job_id,)
    ).fetchone()[0]
    db.execute(
        "INSERT INTO events (job_id, seq, type, data, created_at) VALUES (?, ?, ?, ?, ?)",
        (job_id, seq, event_type, json.dumps(data), now),
    )
    return seq


def _job_exhausted_event(row: sqlite3.Row, error: dict[str, Any]) -> tuple[str, str, Any]:
    return row["id"], "error", error


def _stems_exhausted_event(row: sqlite3.Row, error: dict[str, Any]) -> tuple[str, str, Any]:
    return row["job_id"], "stems", {"variation": row["idx"], "status": "failed", "error": error}


@dataclass(frozen=True)
class _LeasedTable:
    """A table whose rows are units of work leased to conductors: claimed with an expiry,
    renewed, fenced, released, and failed once their attempts are used up. Songs and stems jobs
    share this one mechanism."""

    name: str
    kind: str  # what its fields are called in errors: "job", "stems"
    noun: str  # how messages name a row: "job", "stems job"
    key: tuple[str, ...]  # primary key columns
    order: str  # which runnable row is claimed first
    fields: frozenset[str]  # what `_set_fields` may write
    json_fields: frozenset[str]
    terminal: frozenset[str]  # statuses that end the lease
    exhausted_event: Callable[[sqlite3.Row, dict[str, Any]], tuple[str, str, Any]]

    @property
    def where(self) -> str:
        return " AND ".join(f"{column} = ?" for column in self.key)


_JOBS = _LeasedTable(
    name="jobs",
    kind="job",
    noun="job",
    key=("id",),
    order="created_at, id",
    fields=_JOB_FIELDS,
    json_fields=_JSON_JOB_FIELDS,
    terminal=TERMINAL_STATUSES,
    exhausted_event=_job_exhausted_event,
)
_STEMS = _LeasedTable(
    name="stems",
    kind="stems",
    noun="stems job",
    key=("job_id", "idx"),
    order="created_at, job_id, idx",
    fields=frozenset({"status", "progress", "objects", "info", "error", "updated_at"}),
    json_fields=frozenset({"objects", "info", "error"}),
    terminal=FINISHED_STEMS_STATUSES,
    exhausted_event=_stems_exhausted_event,
)
_RUNNABLE = "status IN ('queued', 'running') AND (lease_expires_at IS NULL OR lease_expires_at < ?)"


def _claim_row(
    db: sqlite3.Connection, table: _LeasedTable, lease_owner: str, lease_s: float, max_attempts: int
) -> tuple[Any, ...] | None:
    """Lease the first runnable row of `table` to `lease_owner` and return its key. Rows whose
    attempts are used up are failed on the way, with the event the table logs for that."""
    now = time.time()
    keys = ", ".join(table.key)
    exhausted = db.execute(
        f"SELECT {keys}, attempts FROM {table.name} WHERE {_RUNNABLE} AND attempts >= ?",
        (now, max_attempts),
    ).fetchall()
    for row in exhausted:
        error = {
            "code": "attempts_exhausted",
            "message": f"the {table.noun} was started {row['attempts']} times without finishing "
            "(its workers kept dying or timing out); giving up",
        }
        db.execute(
            f"UPDATE {table.name} SET status = 'failed', error = ?, lease_owner = NULL, "
            f"lease_expires_at = NULL, updated_at = ? WHERE {table.where}",
            (json.dumps(error), now, *(row[column] for column in table.key)),
        )
        job_id, event_type, data = table.exhausted_event(row, error)
        _append(db, job_id, event_type, data, now)
    row = db.execute(
        f"SELECT {keys} FROM {table.name} WHERE {_RUNNABLE} ORDER BY {table.order} LIMIT 1",
        (now,),
    ).fetchone()
    if row is None:
        return None
    key = tuple(row)
    db.execute(
        f"UPDATE {table.name} SET status = 'running', lease_owner = ?, lease_expires_at = ?, "
        f"attempts = attempts + 1, updated_at = ? WHERE {table.where}",
        (lease_owner, now + lease_s, now, *key),
    )
    return key


def _check_lease(
    db: sqlite3.Connection, table: _LeasedTable, key: tuple[Any, ...], lease_owner: str
) -> None:
    row = db.execute(f"SELECT lease_owner FROM {table.name} WHERE {table.where}", key).fetchone()
    if row is None or row["lease_owner"] != lease_owner:
        name = "/".join(str(part) for part in key)
        raise LeaseLost(f"{table.noun} {name} is no longer leased by {lease_owner}")


def _renew_lease(
    db: sqlite3.Connection,
    table: _LeasedTable,
    key: tuple[Any, ...],
    lease_owner: str,
    lease_s: float,
) -> None:
    _check_lease(db, table, key, lease_owner)
    db.execute(
        f"UPDATE {table.name} SET lease_expires_at = ? WHERE {table.where}",
        (time.time() + lease_s, *key),
    )


def _release_lease(
    db: sqlite3.Connection, table: _LeasedTable, key: tuple[Any, ...], lease_owner: str
) -> None:
    """Hand a running row back (a clean stop: the attempt is not counted)."""
    db.execute(
        f"UPDATE {table.name} SET lease_owner = NULL, lease_expires_at = NULL, "
        "attempts = MAX(attempts - 1, 0), updated_at = ? "
        f"WHERE {table.where} AND lease_owner = ? AND status = 'running'",
        (time.time(), *key, lease_owner),
    )


def _set_fields(
    db: sqlite3.Connection, table: _LeasedTable, key: tuple[Any, ...], fields: dict[str, Any]
) -> None:
    """Write `fields` (JSON where the table keeps JSON); a terminal status ends the lease."""
    unknown = set(fields) - table.fields
    if unknown:
        raise ValueError(f"not {table.kind} fields: {sorted(unknown)}")
    fields = {"updated_at": time.time(), **fields}
    if fields.get("status") in table.terminal:
        fields.update(lease_owner=None, lease_expires_at=None)
    values = [json.dumps(v) if k in table.json_fields else v for k, v in fields.items()]
    assignments = ", ".join(f"{name} = ?" for name in fields)
    db.execute(f"UPDATE {table.name} SET {assignments} WHERE {table.where}", (*values, *key))


def new_job_id() -> str:
    """Time-ordered, unguessable id: `song_` + 12 hex digits of ms + 16 random hex digits."""
    return f"song_{int(time.time() * 1000):012x}{secrets.token_hex(8)}"


def _encode_cursor(created_at: float, job_id: str) -> str:
    return base64.urlsafe_b64encode(f"{created_at!r}|{job_id}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created_at, job_id = raw.split("|", 1)
        return float(created_at), job_id
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError("cursor is not one this server issued") from error


def _loads(raw: str | None) -> Any:
    return None if raw is None else json.loads(raw)


class SQLiteJobStore:
    """`JobStore` on one SQLite file, shared by every replica on the machine.

    Every call runs on one dedicated thread (sqlite3 connections are not shared across threads and
    a busy database must never block the event loop); writes use `BEGIN IMMEDIATE` so claims are
    atomic across processes.
    """

    def __init__(self, path: str | Path) -> None:
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
        self._connection = connection

    @property
    def _db(self) -> sqlite3.Connection:
        assert self._connection is not None, "job store is closed"
        return self._connection

    async def _run(self, fn: Any, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

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
        self, owner: str, limit: int, cursor: str | None
    ) -> tuple[list[JobRecord], str | None]:
        if cursor:
            created_at, job_id = _decode_cursor(cursor)
            rows = self._db.execute(
                "SELECT * FROM jobs WHERE owner = ? AND (created_at < ? OR "
                "(created_at = ? AND id < ?)) ORDER BY created_at DESC, id DESC LIMIT ?",
                (owner, created_at, created_at, job_id, limit + 1),
            ).fetchall()
        else:
            rows = self._db.execute(
                "SELECT * FROM jobs WHERE owner = ? ORDER BY created_at DESC, id DESC LIMIT ?",
                (owner, limit + 1),
            ).fetchall()
        jobs = [self._job_from_row(self._db, row) for row in rows[:limit]]
        next_cursor = (
            _encode_cursor(jobs[-1].created_at, jobs[-1].id) if len(rows) > limit else None
        )
        return jobs, next_cursor

    async def list_jobs(
        self, owner: str, *, limit: int, cursor: str | None = None
    ) -> tuple[list[JobRecord], str | None]:
        result: tuple[list[JobRecord], str | None] = await self._run(
            self._list, owner, limit, cursor
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

    # -- writes ----------------------------------------------------------------------------------

    def _create(
        self,
        db: sqlite3.Connection,
        owner: str,
        request: dict[str, Any],
        seed: int,
        variations: int,
        idempotency_key: str | None,
    ) -> tuple[JobRecord, bool]:
        if idempotency_key is not None:
            row = db.execute(
                "SELECT * FROM jobs WHERE owner = ? AND idempotency_key = ?",
                (owner, idempotency_key),
            ).fetchone()
            if row is not None:
                return self._job_from_row(db, row), False
        now = time.time()
        job_id = new_job_id()
        db.execute(
            "INSERT INTO jobs (id, owner, idempotency_key, status, stage, progress, request, seed,"
            " created_at, updated_at) VALUES (?, ?, ?, 'queued', NULL, 0, ?, ?, ?, ?)",
            (job_id, owner, idempotency_key, json.dumps(request), seed, now, now),
        )
        db.executemany(
            "INSERT INTO variations (job_id, idx, status, seed) VALUES (?, ?, 'queued', ?)",
            [(job_id, k, seed + k) for k in range(variations)],
        )
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
    ) -> tuple[JobRecord, bool]:
        result: tuple[JobRecord, bool] = await self._run(
            self._transaction, self._create, owner, request, seed, variations, idempotency_key
        )
        return result

    def _claim(
        self, db: sqlite3.Connection, lease_owner: str, lease_s: float, max_attempts: int
    ) -> JobRecord | None:
        key = _claim_row(db, _JOBS, lease_owner, lease_s, max_attempts)
        if key is None:
            return None
        claimed = db.execute("SELECT * FROM jobs WHERE id = ?", key).fetchone()
        return self._job_from_row(db, claimed)

    async def claim_next(
        self, lease_owner: str, *, lease_s: float, max_attempts: int
    ) -> JobRecord | None:
        result: JobRecord | None = await self._run(
            self._transaction, self._claim, lease_owner, lease_s, max_attempts
        )
        return result

    async def renew_lease(self, job_id: str, lease_owner: str, *, lease_s: float) -> None:
        await self._run(self._transaction, _renew_lease, _JOBS, (job_id,), lease_owner, lease_s)

    async def release(self, job_id: str, lease_owner: str) -> None:
        await self._run(self._transaction, _release_lease, _JOBS, (job_id,), lease_owner)

    def _update_job(
        self, db: sqlite3.Connection, job_id: str, lease_owner: str, fields: dict[str, Any]
    ) -> None:
        _check_lease(db, _JOBS, (job_id,), lease_owner)
        _set_fields(db, _JOBS, (job_id,), fields)

    async def update_job(self, job_id: str, lease_owner: str, **fields: Any) -> None:
        await self._run(self._transaction, self._update_job, job_id, lease_owner, fields)

    def _update_variation(
        self,
        db: sqlite3.Connection,
        job_id: str,
        index: int,
        lease_owner: str,
        fields: dict[str, Any],
    ) -> None:
        unknown = set(fields) - _VARIATION_FIELDS
        if unknown:
            raise ValueError(f"not variation fields: {sorted(unknown)}")
        _check_lease(db, _JOBS, (job_id,), lease_owner)
        values = [json.dumps(v) if k in _JSON_VARIATION_FIELDS else v for k, v in fields.items()]
        assignments = ", ".join(f"{name} = ?" for name in fields)
        db.execute(
            f"UPDATE variations SET {assignments} WHERE job_id = ? AND idx = ?",
            (*values, job_id, index),
        )
        db.execute("UPDATE jobs SET updated_at = ? WHERE id = ?", (time.time(), job_id))

    async def update_variation(
        self, job_id: str, index: int, lease_owner: str, **fields: Any
    ) -> None:
        await self._run(
            self._transaction, self._update_variation, job_id, index, lease_owner, fields
        )

    def _append_event(
        self,
        db: sqlite3.Connection,
        job_id: str,
        event_type: str,
        data: dict[str, Any],
        lease_owner: str | None,
        job_fields: dict[str, Any] | None,
    ) -> int:
        if lease_owner is not None:
            _check_lease(db, _JOBS, (job_id,), lease_owner)
        if job_fields:
            _set_fields(db, _JOBS, (job_id,), job_fields)
        return _append(db, job_id, event_type, data, time.time())

    async def append_event(
        self,
        job_id: str,
        event_type: str,
        data: dict[str, Any],
        *,
        lease_owner: str | None = None,
        job_fields: dict[str, Any] | None = None,
    ) -> int:
        seq: int = await self._run(
            self._transaction,
            self._append_event,
            job_id,
            event_type,
            data,
            lease_owner,
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
        now = time.time()
        db.execute(
            "INSERT INTO stems (job_id, idx, status, progress, created_at, updated_at) "
            "VALUES (?, ?, 'queued', 0, ?, ?) ON CONFLICT (job_id, idx) DO UPDATE SET "
            "status = 'queued', progress = 0, objects = '{}', info = '{}', error = NULL, "
            "attempts = 0, lease_owner = NULL, lease_expires_at = NULL, created_at = ?, "
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
        self, db: sqlite3.Connection, lease_owner: str, lease_s: float, max_attempts: int
    ) -> StemsRecord | None:
        key = _claim_row(db, _STEMS, lease_owner, lease_s, max_attempts)
        return None if key is None else self._get_stems(db, *key)

    async def claim_next_stems(
        self, lease_owner: str, *, lease_s: float, max_attempts: int
    ) -> StemsRecord | None:
        result: StemsRecord | None = await self._run(
            self._transaction, self._claim_stems, lease_owner, lease_s, max_attempts
        )
        return result

    async def renew_stems_lease(
        self, job_id: str, index: int, lease_owner: str, *, lease_s: float
    ) -> None:
        await self._run(
            self._transaction, _renew_lease, _STEMS, (job_id, index), lease_owner, lease_s
        )

    async def release_stems(self, job_id: str, index: int, lease_owner: str) -> None:
        await self._run(self._transaction, _release_lease, _STEMS, (job_id, index), lease_owner)

    def _update_stems(
        self,
        db: sqlite3.Connection,
        job_id: str,
        index: int,
        lease_owner: str,
        fields: dict[str, Any],
        event: tuple[str, dict[str, Any]] | None,
    ) -> None:
        _check_lease(db, _STEMS, (job_id, index), lease_owner)
        _set_fields(db, _STEMS, (job_id, index), fields)
        if event is not None:
            _append(db, job_id, event[0], event[1], time.time())

    async def update_stems(
        self,
        job_id: str,
        index: int,
        lease_owner: str,
        *,
        event: tuple[str, dict[str, Any]] | None = None,
        **fields: Any,
    ) -> None:
        await self._run(
            self._transaction, self._update_stems, job_id, index, lease_owner, fields, event
        )

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
        def _close() -> None:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

        await self._run(_close)
        self._executor.shutdown(wait=True)


def open_job_store(database_url: str) -> JobStore:
    """The job store for a (resolved) `storage.database_url`."""
    scheme, _, rest = database_url.partition("://")
    if scheme == "sqlite":
        # SQLAlchemy's convention: sqlite:///relative.db, sqlite:////absolute.db
        return SQLiteJobStore(rest[1:])
    raise ValueError(f"storage.database_url: unsupported scheme {scheme!r}; use sqlite:///PATH")
