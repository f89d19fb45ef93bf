"""`PostgresJobStore`: the `JobStore` of a cluster, on PostgreSQL through psycopg 3 (async).

Every replica of every node opens its own store on one database; the database holds the truth and
its clock decides leases. What makes that safe under concurrency:

- Claims pick the oldest runnable row with `FOR UPDATE SKIP LOCKED`, so concurrent claimers never
  wait on, nor take, each other's row; each claim writes a fresh `lease_token`.
- Every write that belongs to claimed work is `UPDATE … WHERE key AND lease_token = %s`: no row
  means the claim was superseded, and the caller gets `LeaseLost`.
- A job's events are numbered from `jobs.last_seq`, incremented by the append itself; the row lock
  that UPDATE takes queues concurrent appenders, so sequence numbers are dense and commit in order.
- Idempotency keys are a unique index used with `INSERT … ON CONFLICT DO NOTHING`.

Readers sleep instead of polling: appends `NOTIFY songserve_events, '<job id>:<seq>'`, and work
becoming claimable `NOTIFY songserve_work`, in the writing transaction (delivered on commit). Each
store holds one LISTEN connection outside its pool and wakes the waiters of `wait_for_events` and
`wait_for_work` in this process, so an idle SSE subscriber costs the database nothing.

The pool opens lazily on first use (`open_job_store` is synchronous) and applies the schema's
migrations, serialised across replicas by an advisory lock. Connection failures surface as
`StoreUnavailable` with messages that never carry the password; the pool checks a connection before
lending it, so the store recovers by itself once the database is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Collection, Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from pipeline.song_contracts import TEXT2MUSIC

from .postgres_connect import (
    DB_NOW as _NOW,
)
from .postgres_connect import (
    KEEPALIVES,
    apply_migrations,
    describe_target,
    unavailable_error,
)
from .postgres_listener import EVENTS_CHANNEL, WORK_CHANNEL, Listener
from .postgres_tenancy import PostgresTenancy
from .postgres_webhooks import PostgresWebhooks
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
from .tenancy import Admission

logger = logging.getLogger(__name__)


_RUNNABLE = (
    f"status IN ('queued', 'running') AND (lease_expires_at IS NULL OR lease_expires_at < {_NOW})"
)
_END_LEASE = "lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL"
# A job some conductor is driving now (its lease is live); `j` is the jobs table.
_LEASED_JOB = f"j.status = 'running' AND j.lease_expires_at >= {_NOW}"


def _variations_of(job: str) -> str:
    """A JSONB array of the variations of the job whose id is the SQL expression `job`."""
    return (
        "(SELECT COALESCE(jsonb_agg(to_jsonb(v) ORDER BY v.idx), '[]'::jsonb) "
        f"FROM variations AS v WHERE v.job_id = {job}) AS variations"
    )


_SELECT_JOB = f"SELECT jobs.*, {_variations_of('jobs.id')} FROM jobs"


# -- leased work ---------------------------------------------------------------------------------


_JOBS, _STEMS = JOBS, STEMS


def _match(table: LeasedTable) -> str:
    """The WHERE clause that picks one row of `table` by its key."""
    return table.where("%s", qualified=True)


def _assignments(table: LeasedTable, fields: dict[str, Any]) -> tuple[list[str], list[Any]]:
    """SET clauses and their parameters for lease-holder `fields` of `table`; a terminal status
    ends the lease, and `updated_at` is the database's now unless given."""
    check_fields(table.kind, fields, table.fields)
    clauses: list[str] = []
    params: list[Any] = []
    if "updated_at" not in fields:
        clauses.append(f"updated_at = {_NOW}")
    if fields.get("status") in table.terminal:
        clauses.append(_END_LEASE)
    for name, value in fields.items():
        clauses.append(f"{name} = %s")
        params.append(Jsonb(value) if name in table.json_fields and value is not None else value)
    return clauses, params


def _job(row: dict[str, Any]) -> JobRecord:
    return JobRecord(
        id=row["id"],
        owner=row["owner"],
        status=row["status"],
        stage=row["stage"],
        progress=row["progress"],
        request=row["request"],
        seed=row["seed"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        attempts=row["attempts"],
        lease_owner=row["lease_owner"],
        lease_token=row["lease_token"],
        lease_expires_at=row["lease_expires_at"],
        idempotency_key=row["idempotency_key"],
        lyrics=row["lyrics"],
        lyrics_source=row["lyrics_source"],
        tags=row["tags"],
        error=row["error"],
        variations=[
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
                objects=v["objects"],
                render=v["render"],
                error=v["error"],
            )
            for v in row["variations"]
        ],
    )


def _stems(row: dict[str, Any]) -> StemsRecord:
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
        objects=row["objects"],
        info=row["info"],
        error=row["error"],
    )


# -- the store -----------------------------------------------------------------------------------


class PostgresJobStore(PostgresTenancy, PostgresWebhooks):
    """`JobStore` on PostgreSQL, shared by every replica of a cluster.

    `database_url` is a libpq URL or conninfo string. `max_connections` bounds the pool;
    `connect_timeout_s` bounds one connection attempt (libpq counts whole seconds, at least 2);
    `timeout_s` bounds how long a call waits for a pooled connection before it raises
    `StoreUnavailable`. `queries` counts the statements this store executed (benchmarks and tests
    read it: waiting for events or work executes none).
    """

    def __init__(
        self,
        database_url: str,
        *,
        max_connections: int = 10,
        connect_timeout_s: int = 3,
        timeout_s: float = 5.0,
    ) -> None:
        self._conninfo = database_url
        self._max_connections = max_connections
        self._connect_timeout_s = max(2, int(connect_timeout_s))
        self._timeout_s = timeout_s
        self._connect_kwargs: dict[str, Any] = {
            "connect_timeout": self._connect_timeout_s,
            **KEEPALIVES,
        }
        self._pool: AsyncConnectionPool | None = None
        self._migrated = False
        self._opening = asyncio.Lock()
        self._listener: Listener | None = None
        self._closed = False
        self.queries = 0

    def __repr__(self) -> str:
        return f"PostgresJobStore({describe_target(self._conninfo)})"

    # -- plumbing ---------------------------------------------------------------------------------

    async def open(self) -> None:
        """Open the pool, apply migrations and start listening now rather than on first use.
        Raises StoreUnavailable."""
        await self._ready()
        await self._listening(self._connect_timeout_s)

    async def _ready(self) -> AsyncConnectionPool:
        if self._pool is not None and self._migrated:
            return self._pool
        async with self._opening:
            if self._closed:
                raise RuntimeError("the job store is closed")
            if self._pool is None:
                pool = AsyncConnectionPool(
                    self._conninfo,
                    min_size=1,
                    max_size=self._max_connections,
                    open=False,
                    kwargs={"autocommit": True, **self._connect_kwargs},
                    # A connection that died with a database restart is replaced, not lent.
                    check=AsyncConnectionPool.check_connection,
                    timeout=self._timeout_s,
                    # Past this the pool stops retrying in the background and the next call
                    # starts a fresh attempt, so recovery never waits out a long backoff.
                    reconnect_timeout=max(self._timeout_s, 2.0),
                    name="songserve-jobs",
                )
                await pool.open(wait=False)
                self._pool = pool
            if not self._migrated:
                try:
                    await asyncio.to_thread(
                        apply_migrations, self._conninfo, connect_timeout_s=self._connect_timeout_s
                    )
                except psycopg.OperationalError as error:
                    raise unavailable_error(self._conninfo, error) from None
                self._migrated = True
        return self._pool

    @contextlib.asynccontextmanager
    async def _cursor(
        self, *, transaction: bool = False
    ) -> AsyncIterator[psycopg.AsyncCursor[dict[str, Any]]]:
        """A cursor on a pooled connection: autocommit (one statement, one transaction) or one
        transaction around the block. Connection failures raise StoreUnavailable."""
        pool = await self._ready()
        try:
            async with pool.connection() as conn:
                if transaction:
                    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
                        yield cur
                else:
                    async with conn.cursor(row_factory=dict_row) as cur:
                        yield cur
        except psycopg.OperationalError as error:
            raise unavailable_error(self._conninfo, error) from None

    async def _execute(
        self, cur: psycopg.AsyncCursor[dict[str, Any]], query: str, params: Sequence[Any] = ()
    ) -> None:
        """The one way SQL is sent, so `queries` counts every statement (once it has run)."""
        try:
            await cur.execute(query, params)
        finally:
            self.queries += 1

    async def _one(
        self, cur: psycopg.AsyncCursor[dict[str, Any]], query: str, params: Sequence[Any] = ()
    ) -> dict[str, Any] | None:
        await self._execute(cur, query, params)
        return await cur.fetchone()

    async def _all(
        self, cur: psycopg.AsyncCursor[dict[str, Any]], query: str, params: Sequence[Any] = ()
    ) -> list[dict[str, Any]]:
        await self._execute(cur, query, params)
        return await cur.fetchall()

    async def _append(
        self,
        cur: psycopg.AsyncCursor[dict[str, Any]],
        job_id: str,
        event_type: str,
        data: dict[str, Any],
        *,
        token: str | None = None,
        job_fields: dict[str, Any] | None = None,
    ) -> int:
        """Append an event with the job's next sequence number, optionally setting job fields
        fenced by `token`, and notify listeners (on commit): one statement."""
        clauses, params = _assignments(_JOBS, job_fields) if job_fields else ([], [])
        fence = " AND lease_token = %s" if token is not None else ""
        row = await self._one(
            cur,
            f"WITH job AS (UPDATE jobs SET {', '.join([*clauses, 'last_seq = last_seq + 1'])} "
            f"WHERE id = %s{fence} RETURNING id, last_seq) "
            "INSERT INTO events (job_id, seq, type, data, created_at) "
            f"SELECT id, last_seq, %s, %s, {_NOW} FROM job "
            f"RETURNING seq, pg_notify('{EVENTS_CHANNEL}', job_id || ':' || seq)",
            [
                *params,
                job_id,
                *([token] if token is not None else []),
                event_type,
                Jsonb(data),
            ],
        )
        if row is None:
            if token is not None:
                raise LeaseLost(f"job {job_id} is no longer leased to this claim")
            raise KeyError(f"no job {job_id}")
        seq: int = row["seq"]
        return seq

    async def _notify_work(self, cur: psycopg.AsyncCursor[dict[str, Any]], payload: str) -> None:
        await self._execute(cur, "SELECT pg_notify(%s, %s)", (WORK_CHANNEL, payload))

    # -- leases (songs and stems) -----------------------------------------------------------------

    async def _claim(
        self,
        table: LeasedTable,
        worker: str,
        lease_s: float,
        max_attempts: int,
        exclude: tuple[str, list[Any]],
        returning: str,
    ) -> dict[str, Any] | None:
        keys = ", ".join(table.key)
        exclude_sql, exclude_params = exclude
        async with self._cursor(transaction=True) as cur:
            exhausted = await self._all(
                cur,
                f"SELECT {keys}, attempts FROM {table.name} WHERE {_RUNNABLE} "
                f"AND attempts >= %s ORDER BY {table.order} FOR UPDATE SKIP LOCKED",
                (max_attempts,),
            )
            for row in exhausted:
                error = exhausted_error(table.noun, row["attempts"])
                key = [row[column] for column in table.key]
                await self._execute(
                    cur,
                    f"UPDATE {table.name} SET status = 'failed', error = %s, {_END_LEASE}, "
                    f"updated_at = {_NOW} WHERE {_match(table)}",
                    (Jsonb(error), *key),
                )
                await self._append(cur, *table.exhausted_event(row, error))
            match = " AND ".join(f"{table.name}.{column} = next.{column}" for column in table.key)
            return await self._one(
                cur,
                f"WITH next AS (SELECT {keys} FROM {table.name} WHERE {_RUNNABLE} "
                f"AND attempts < %s{exclude_sql} ORDER BY {table.order} "
                "LIMIT 1 FOR UPDATE SKIP LOCKED) "
                f"UPDATE {table.name} SET status = 'running', lease_owner = %s, "
                f"lease_token = %s, lease_expires_at = {_NOW} + %s, "
                f"attempts = {table.name}.attempts + 1, updated_at = {_NOW} "
                f"FROM next WHERE {match} RETURNING {returning}",
                (max_attempts, *exclude_params, worker, new_lease_token(), float(lease_s)),
            )

    async def _renew(
        self, table: LeasedTable, key: Sequence[Any], token: str, lease_s: float
    ) -> None:
        async with self._cursor() as cur:
            row = await self._one(
                cur,
                f"UPDATE {table.name} SET lease_expires_at = {_NOW} + %s "
                f"WHERE {_match(table)} AND lease_token = %s RETURNING 1 AS renewed",
                (float(lease_s), *key, token),
            )
        if row is None:
            raise LeaseLost(
                f"{table.noun} {':'.join(map(str, key))} is no longer leased to this claim"
            )

    async def _release(self, table: LeasedTable, key: Sequence[Any], token: str) -> None:
        async with self._cursor() as cur:
            await self._execute(
                cur,
                f"UPDATE {table.name} SET {_END_LEASE}, attempts = GREATEST(attempts - 1, 0), "
                f"updated_at = {_NOW} WHERE {_match(table)} AND lease_token = %s "
                "AND status = 'running' RETURNING pg_notify(%s, %s)",
                (*key, token, WORK_CHANNEL, table.work(key)),
            )

    async def _update(
        self,
        cur: psycopg.AsyncCursor[dict[str, Any]],
        table: LeasedTable,
        key: Sequence[Any],
        token: str,
        fields: dict[str, Any],
    ) -> None:
        clauses, params = _assignments(table, fields)
        row = await self._one(
            cur,
            f"UPDATE {table.name} SET {', '.join(clauses)} "
            f"WHERE {_match(table)} AND lease_token = %s RETURNING 1 AS updated",
            (*params, *key, token),
        )
        if row is None:
            raise LeaseLost(
                f"{table.noun} {':'.join(map(str, key))} is no longer leased to this claim"
            )

    # -- songs ------------------------------------------------------------------------------------

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
        job_id = new_job_id()
        async with self._cursor(transaction=True) as cur:
            if admission is not None:
                # A retried request gets its job back, admitted or not today.
                if idempotency_key is not None:
                    existing = await self._one(
                        cur,
                        f"{_SELECT_JOB} WHERE owner = %s AND idempotency_key = %s",
                        (owner, idempotency_key),
                    )
                    if existing is not None:
                        return _job(existing), False
                await self._admit(cur, admission, owner, audio_s)
            inserted = await self._one(
                cur,
                "INSERT INTO jobs (id, owner, idempotency_key, status, progress, request, seed, "
                "audio_s, created_at, updated_at) SELECT %s, %s, %s, 'queued', 0, %s, %s, %s, "
                f"now, now FROM (SELECT {_NOW} AS now) AS clock "
                "ON CONFLICT (owner, idempotency_key) WHERE idempotency_key IS NOT NULL "
                "DO NOTHING RETURNING id",
                (job_id, owner, idempotency_key, Jsonb(request), seed, audio_s),
            )
            if inserted is None:  # the key was used: ON CONFLICT waited for its writer's commit
                existing = await self._one(
                    cur,
                    f"{_SELECT_JOB} WHERE owner = %s AND idempotency_key = %s",
                    (owner, idempotency_key),
                )
                assert existing is not None
                return _job(existing), False
            await self._execute(
                cur,
                "INSERT INTO variations (job_id, idx, status, seed) "
                "SELECT %s, k, 'queued', %s::bigint + k FROM generate_series(0, %s - 1) AS k",
                (job_id, seed, variations),
            )
            if callback_url is not None:
                await self._insert_webhook(cur, job_id, callback_url)
            await self._append(cur, job_id, "stage", {"stage": "queued"})
            await self._notify_work(cur, _JOBS.work((job_id,)))
            row = await self._one(cur, f"{_SELECT_JOB} WHERE id = %s", (job_id,))
        assert row is not None
        return _job(row), True

    async def cancel_job(self, job_id: str) -> JobRecord | None:
        async with self._cursor(transaction=True) as cur:
            canceled = await self._one(
                cur,
                f"UPDATE jobs SET status = 'canceled', stage = 'canceled', updated_at = {_NOW}, "
                "lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL "
                "WHERE id = %s AND status = ANY(%s) RETURNING id",
                (job_id, list(ACTIVE_STATUSES)),
            )
            if canceled is not None:
                await self._execute(
                    cur,
                    "UPDATE variations SET status = 'canceled' "
                    "WHERE job_id = %s AND status = ANY(%s)",
                    (job_id, list(ACTIVE_STATUSES)),
                )
                await self._append(cur, job_id, TERMINAL_EVENTS["canceled"], {"status": "canceled"})
            row = await self._one(cur, f"{_SELECT_JOB} WHERE id = %s", (job_id,))
        return None if row is None else _job(row)

    async def get_job(self, job_id: str) -> JobRecord | None:
        async with self._cursor() as cur:
            row = await self._one(cur, f"{_SELECT_JOB} WHERE id = %s", (job_id,))
        return None if row is None else _job(row)

    async def count_jobs(self, status: str) -> int:
        async with self._cursor() as cur:
            row = await self._one(
                cur, "SELECT count(*) AS n FROM jobs WHERE status = %s", (status,)
            )
        assert row is not None
        return int(row["n"])

    async def list_jobs(
        self, owner: str, *, limit: int, cursor: str | None = None, search: str | None = None
    ) -> tuple[list[JobRecord], str | None]:
        after = decode_cursor(cursor) if cursor else None  # ValueError before any query
        where = "owner = %s"
        params: list[object] = [owner]
        if after is not None:
            where += " AND (created_at, id) < (%s, %s)"
            params += [after[0], after[1]]
        words = search_words(search)
        if words:
            text = ", ".join(f"request->>'{name}'" for name in SEARCHED_REQUEST_FIELDS)
            where += "".join(f" AND strpos(lower(concat_ws(' ', {text})), %s) > 0" for _ in words)
            params += words
        async with self._cursor() as cur:
            rows = await self._all(
                cur,
                f"{_SELECT_JOB} WHERE {where} ORDER BY created_at DESC, id DESC LIMIT %s",
                (*params, limit + 1),
            )
        jobs = [_job(row) for row in rows[:limit]]
        next_cursor = encode_cursor(jobs[-1].created_at, jobs[-1].id) if len(rows) > limit else None
        return jobs, next_cursor

    async def claim_next(
        self,
        worker: str,
        *,
        lease_s: float,
        max_attempts: int,
        exclude: Collection[str] = (),
    ) -> JobRecord | None:
        row = await self._claim(
            _JOBS,
            worker,
            lease_s,
            max_attempts,
            (" AND id <> ALL(%s::text[])", [list(exclude)]),
            f"jobs.*, {_variations_of('jobs.id')}",
        )
        return None if row is None else _job(row)

    async def renew_lease(self, job_id: str, token: str, *, lease_s: float) -> None:
        await self._renew(_JOBS, (job_id,), token, lease_s)

    async def release(self, job_id: str, token: str) -> None:
        await self._release(_JOBS, (job_id,), token)

    async def update_job(self, job_id: str, token: str, **fields: Any) -> None:
        async with self._cursor() as cur:
            await self._update(cur, _JOBS, (job_id,), token, fields)

    async def update_variation(self, job_id: str, index: int, token: str, **fields: Any) -> None:
        check_fields("variation", fields, VARIATION_FIELDS)
        params = [
            Jsonb(value) if name in JSON_VARIATION_FIELDS and value is not None else value
            for name, value in fields.items()
        ]
        # One statement: the fence (and updated_at) on the job, the fields on the variation.
        variation = (
            ", variation AS (UPDATE variations SET "
            + ", ".join(f"{name} = %s" for name in fields)
            + " WHERE job_id = (SELECT id FROM job) AND idx = %s)"
            if fields
            else ""
        )
        async with self._cursor() as cur:
            row = await self._one(
                cur,
                f"WITH job AS (UPDATE jobs SET updated_at = {_NOW} "
                f"WHERE id = %s AND lease_token = %s RETURNING id){variation} "
                "SELECT id FROM job",
                (job_id, token, *params, *([index] if fields else [])),
            )
        if row is None:
            raise LeaseLost(f"job {job_id} is no longer leased to this claim")

    # -- load -------------------------------------------------------------------------------------

    async def renders_by_pool(self) -> dict[str, PoolRenders]:
        async with self._cursor() as cur:
            rows = await self._all(
                cur,
                "SELECT v.render->>'pool' AS pool, count(*) AS renders, "
                "COALESCE(sum((j.request->>'duration_s')::double precision), 0) AS audio_s "
                "FROM jobs AS j JOIN variations AS v ON v.job_id = j.id "
                f"WHERE {_LEASED_JOB} AND v.status = 'running' AND v.render->>'pool' IS NOT NULL "
                "GROUP BY 1",
            )
        return {row["pool"]: PoolRenders(int(row["renders"]), row["audio_s"]) for row in rows}

    async def queue_place(self, job_id: str) -> QueuePlace | None:
        # Runnable rows ahead of `me` in claim order (JOBS.order: created_at, id).
        ahead = (
            "j.status IN ('queued', 'running') "
            f"AND (j.lease_expires_at IS NULL OR j.lease_expires_at < {_NOW}) "
            "AND (j.created_at, j.id) < (me.created_at, me.id)"
        )
        async with self._cursor() as cur:
            row = await self._one(
                cur,
                "WITH me AS (SELECT id, created_at FROM jobs WHERE id = %s AND status = 'queued') "
                f"SELECT (SELECT count(*) FROM jobs AS j WHERE {ahead}) AS position, "
                "(SELECT COALESCE(sum((j.request->>'duration_s')::double precision), 0) "
                "FROM jobs AS j JOIN variations AS v ON v.job_id = j.id "
                "WHERE v.status IN ('queued', 'running') AND v.render->'raw' IS NULL "
                f"AND (({_LEASED_JOB}) OR ({ahead}))) AS audio_s_ahead FROM me",
                (job_id,),
            )
        if row is None:
            return None
        return QueuePlace(position=int(row["position"]), audio_s_ahead=row["audio_s_ahead"])

    async def queue_places(self) -> dict[str, QueuePlace]:
        async with self._cursor() as cur:
            rows = await self._all(
                cur,
                "SELECT j.id, j.status, "
                f"COALESCE({_LEASED_JOB}, false) AS leased, "
                f"(j.lease_expires_at IS NULL OR j.lease_expires_at < {_NOW}) AS runnable, "
                "COALESCE(sum(CASE WHEN v.status IN ('queued', 'running') "
                "AND v.render->'raw' IS NULL "
                "THEN (j.request->>'duration_s')::double precision ELSE 0 END), 0) AS audio_s "
                "FROM jobs AS j LEFT JOIN variations AS v ON v.job_id = j.id "
                "WHERE j.status IN ('queued', 'running') "
                "GROUP BY j.id ORDER BY j.created_at, j.id",
            )
        return places_in_line(rows)

    async def backlog_by_request(self) -> dict[BacklogKey, ModelBacklog]:
        rendering = (
            f"j.status = 'running' AND j.lease_expires_at >= {_NOW} AND v.status = 'running'"
        )
        duration = "COALESCE((j.request->>'duration_s')::double precision, 0)"
        async with self._cursor() as cur:
            rows = await self._all(
                cur,
                "SELECT COALESCE(j.request->>'model', 'auto') AS model, "
                f"COALESCE(j.request->'edit'->>'task', '{TEXT2MUSIC}') AS task, "
                "COALESCE(j.request->>'language', 'en') AS language, "
                # As BacklogKey.of_request reads them.
                "COALESCE(j.request->'lora'->>'ref', j.request->'lora'->>'id') IS NOT NULL "
                "AS lora, "
                "(j.request->'reference'->>'key') IS NOT NULL AS reference, "
                f"count(*) FILTER (WHERE NOT COALESCE({rendering}, false)) AS waiting, "
                f"COALESCE(sum({duration}) FILTER (WHERE NOT COALESCE({rendering}, false)), 0) "
                "AS waiting_audio_s, "
                f"count(*) FILTER (WHERE {rendering}) AS rendering, "
                f"COALESCE(sum({duration}) FILTER (WHERE {rendering}), 0) AS rendering_audio_s "
                "FROM jobs AS j JOIN variations AS v ON v.job_id = j.id "
                "WHERE j.status IN ('queued', 'running') AND v.status IN ('queued', 'running') "
                "AND v.render->'raw' IS NULL GROUP BY 1, 2, 3, 4, 5",
            )
        return {BacklogKey.from_row(row): ModelBacklog.from_row(row) for row in rows}

    # -- events -----------------------------------------------------------------------------------

    async def append_event(
        self,
        job_id: str,
        event_type: str,
        data: dict[str, Any],
        *,
        token: str | None = None,
        job_fields: dict[str, Any] | None = None,
    ) -> int:
        async with self._cursor() as cur:
            return await self._append(
                cur, job_id, event_type, data, token=token, job_fields=job_fields
            )

    async def events_after(
        self, job_id: str, after_seq: int, limit: int = 500
    ) -> list[EventRecord]:
        async with self._cursor() as cur:
            rows = await self._all(
                cur,
                "SELECT seq, type, data, created_at FROM events WHERE job_id = %s AND seq > %s "
                "ORDER BY seq LIMIT %s",
                (job_id, after_seq, limit),
            )
        return [
            EventRecord(seq=r["seq"], type=r["type"], data=r["data"], created_at=r["created_at"])
            for r in rows
        ]

    async def _listening(self, timeout: float) -> Listener:
        """The LISTEN connection, started on first use. Until its first connection attempt has
        ended, callers wait for it (at most `timeout`), so the first waiters are heard without
        reading twice. A waiter that registers while it is down is woken when it is back (every
        reconnection wakes every waiter, which reads again)."""
        if self._closed:
            raise RuntimeError("the job store is closed")
        if self._listener is None:
            self._listener = Listener(self._conninfo, self._connect_kwargs)
            self._listener.start()
        if not self._listener.tried.is_set() and timeout > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._listener.tried.wait(), min(timeout, self._connect_timeout_s + 1)
                )
        return self._listener

    async def wait_for_events(
        self, job_id: str, after_seq: int, timeout: float
    ) -> list[EventRecord]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        listener = await self._listening(timeout)
        # Registered before reading, so an event committed after the read wakes this waiter.
        with listener.job_waiter(job_id, after_seq) as woken:
            while True:
                woken.clear()
                events = await self.events_after(job_id, after_seq)
                if events:
                    return events
                try:
                    await asyncio.wait_for(woken.wait(), deadline - loop.time())
                except TimeoutError:
                    return []

    async def wait_for_work(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        listener = await self._listening(timeout)
        with listener.work_waiter() as woken, contextlib.suppress(TimeoutError):
            await asyncio.wait_for(woken.wait(), deadline - loop.time())

    # -- stems ------------------------------------------------------------------------------------

    async def request_stems(self, job_id: str, index: int) -> tuple[StemsRecord, bool]:
        try:
            async with self._cursor(transaction=True) as cur:
                row = await self._one(
                    cur,
                    "INSERT INTO stems (job_id, idx, status, progress, created_at, updated_at) "
                    f"SELECT %s, %s, 'queued', 0, now, now FROM (SELECT {_NOW} AS now) AS clock "
                    "ON CONFLICT (job_id, idx) DO UPDATE SET status = 'queued', progress = 0, "
                    "objects = '{}', info = '{}', error = NULL, attempts = 0, "
                    f"{_END_LEASE}, created_at = EXCLUDED.created_at, "
                    "updated_at = EXCLUDED.updated_at WHERE stems.status = 'failed' RETURNING *",
                    (job_id, index),
                )
                if row is None:  # queued, running or finished: returned as it is
                    existing = await self._one(
                        cur, "SELECT * FROM stems WHERE job_id = %s AND idx = %s", (job_id, index)
                    )
                    assert existing is not None
                    return _stems(existing), False
                await self._append(cur, job_id, "stems", {"variation": index, "status": "queued"})
                await self._notify_work(cur, _STEMS.work((job_id, index)))
        except psycopg.errors.ForeignKeyViolation:
            raise KeyError(f"no job {job_id}") from None
        return _stems(row), True

    async def get_stems(self, job_id: str, index: int) -> StemsRecord | None:
        async with self._cursor() as cur:
            row = await self._one(
                cur, "SELECT * FROM stems WHERE job_id = %s AND idx = %s", (job_id, index)
            )
        return None if row is None else _stems(row)

    async def list_stems(self, job_id: str) -> list[StemsRecord]:
        async with self._cursor() as cur:
            rows = await self._all(
                cur, "SELECT * FROM stems WHERE job_id = %s ORDER BY idx", (job_id,)
            )
        return [_stems(row) for row in rows]

    async def claim_next_stems(
        self,
        worker: str,
        *,
        lease_s: float,
        max_attempts: int,
        exclude: Collection[tuple[str, int]] = (),
    ) -> StemsRecord | None:
        excluded = list(exclude)
        row = await self._claim(
            _STEMS,
            worker,
            lease_s,
            max_attempts,
            (
                " AND NOT EXISTS (SELECT 1 FROM unnest(%s::text[], %s::integer[]) AS x(j, i) "
                "WHERE x.j = stems.job_id AND x.i = stems.idx)",
                [[job for job, _ in excluded], [index for _, index in excluded]],
            ),
            "stems.*",
        )
        return None if row is None else _stems(row)

    async def renew_stems_lease(
        self, job_id: str, index: int, token: str, *, lease_s: float
    ) -> None:
        await self._renew(_STEMS, (job_id, index), token, lease_s)

    async def release_stems(self, job_id: str, index: int, token: str) -> None:
        await self._release(_STEMS, (job_id, index), token)

    async def update_stems(
        self,
        job_id: str,
        index: int,
        token: str,
        *,
        event: tuple[str, dict[str, Any]] | None = None,
        **fields: Any,
    ) -> None:
        async with self._cursor(transaction=event is not None) as cur:
            await self._update(cur, _STEMS, (job_id, index), token, fields)
            if event is not None:
                await self._append(cur, job_id, event[0], event[1])

    # -- files made on request --------------------------------------------------------------------

    async def add_variation_object(self, job_id: str, index: int, name: str, key: str) -> None:
        async with self._cursor() as cur:
            row = await self._one(
                cur,
                "UPDATE variations SET objects = objects || jsonb_build_object(%s::text, %s::text) "
                "WHERE job_id = %s AND idx = %s AND status = 'succeeded' RETURNING 1 AS added",
                (name, key, job_id, index),
            )
        if row is None:
            raise KeyError(f"no finished variation {index} of {job_id}")

    async def claim_delivery(
        self, job_id: str, index: int, name: str, worker: str, *, lease_s: float
    ) -> str | None:
        # A concurrent claimer of the same file waits on the row lock of the first, then finds
        # its lease running: one claim wins, on any replica.
        try:
            async with self._cursor() as cur:
                row = await self._one(
                    cur,
                    "INSERT INTO deliveries (job_id, idx, name, status, claims, lease_owner, "
                    "lease_token, lease_expires_at, created_at, updated_at) "
                    "SELECT %s, %s, %s, 'making', 1, %s, %s, now + %s, now, now "
                    f"FROM (SELECT {_NOW} AS now) AS clock "
                    "ON CONFLICT (job_id, idx, name) DO UPDATE SET status = 'making', "
                    "claims = deliveries.claims + 1, lease_owner = EXCLUDED.lease_owner, "
                    "lease_token = EXCLUDED.lease_token, "
                    "lease_expires_at = EXCLUDED.lease_expires_at, "
                    "updated_at = EXCLUDED.updated_at "
                    "WHERE deliveries.status <> 'delivered' AND (deliveries.lease_expires_at "
                    "IS NULL OR deliveries.lease_expires_at < EXCLUDED.updated_at) "
                    "RETURNING lease_token",
                    (job_id, index, name, worker, new_lease_token(), float(lease_s)),
                )
        except psycopg.errors.ForeignKeyViolation:
            raise KeyError(f"no job {job_id}") from None
        return None if row is None else str(row["lease_token"])

    async def finish_delivery(
        self, job_id: str, index: int, name: str, token: str, *, delivered: bool
    ) -> None:
        async with self._cursor() as cur:
            await self._execute(
                cur,
                f"UPDATE deliveries SET status = %s, {_END_LEASE}, updated_at = {_NOW} "
                "WHERE job_id = %s AND idx = %s AND name = %s AND lease_token = %s",
                ("delivered" if delivered else "open", job_id, index, name, token),
            )

    async def get_delivery(self, job_id: str, index: int, name: str) -> DeliveryRecord | None:
        async with self._cursor() as cur:
            row = await self._one(
                cur,
                "SELECT * FROM deliveries WHERE job_id = %s AND idx = %s AND name = %s",
                (job_id, index, name),
            )
        if row is None:
            return None
        return DeliveryRecord.from_row(row)

    # -- cache ------------------------------------------------------------------------------------

    async def cache_get(self, namespace: str, key: str) -> Any | None:
        async with self._cursor() as cur:
            row = await self._one(
                cur, "SELECT value FROM cache WHERE namespace = %s AND key = %s", (namespace, key)
            )
        return None if row is None else row["value"]

    async def cache_put(self, namespace: str, key: str, value: Any) -> None:
        async with self._cursor() as cur:
            await self._execute(
                cur,
                "INSERT INTO cache (namespace, key, value, created_at) "
                f"VALUES (%s, %s, %s, {_NOW}) ON CONFLICT (namespace, key) "
                "DO UPDATE SET value = EXCLUDED.value, created_at = EXCLUDED.created_at",
                (namespace, key, Jsonb(value)),
            )

    async def close(self) -> None:
        """Stop listening and close the pool; the store cannot be used afterwards."""
        async with self._opening:
            self._closed = True
            if self._listener is not None:
                await self._listener.close()
                self._listener = None
            if self._pool is not None:
                await self._pool.close()
                self._pool = None
