"""The Postgres job store's schema, as numbered migrations applied in order (never edited once
released: a change is a new version).

Times are epoch seconds from the database clock (`DOUBLE PRECISION`), the unit the records carry.
`jobs.last_seq` is a job's event counter: appending an event increments it in an UPDATE, which
also queues concurrent appenders to one job behind its row lock, so sequence numbers are dense.
"""

from __future__ import annotations

MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    idempotency_key TEXT,
    status TEXT NOT NULL,
    stage TEXT,
    progress DOUBLE PRECISION NOT NULL DEFAULT 0,
    request JSONB NOT NULL,
    seed BIGINT NOT NULL,
    lyrics TEXT,
    lyrics_source JSONB,
    tags JSONB,
    error JSONB,
    attempts INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_token TEXT,
    lease_expires_at DOUBLE PRECISION,
    last_seq BIGINT NOT NULL DEFAULT 0,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);
CREATE UNIQUE INDEX jobs_idempotency ON jobs (owner, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX jobs_runnable ON jobs (status, lease_expires_at, created_at);
CREATE INDEX jobs_owner_created ON jobs (owner, created_at DESC, id DESC);

CREATE TABLE variations (
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    status TEXT NOT NULL,
    model TEXT,
    model_version TEXT,
    seed BIGINT,
    duration_s DOUBLE PRECISION,
    sample_rate INTEGER,
    loudness_lufs DOUBLE PRECISION,
    true_peak_dbtp DOUBLE PRECISION,
    objects JSONB NOT NULL DEFAULT '{}',
    render JSONB NOT NULL DEFAULT '{}',
    error JSONB,
    PRIMARY KEY (job_id, idx)
);

CREATE TABLE stems (
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    status TEXT NOT NULL,
    progress DOUBLE PRECISION NOT NULL DEFAULT 0,
    objects JSONB NOT NULL DEFAULT '{}',
    info JSONB NOT NULL DEFAULT '{}',
    error JSONB,
    attempts INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_token TEXT,
    lease_expires_at DOUBLE PRECISION,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (job_id, idx)
);
CREATE INDEX stems_runnable ON stems (status, lease_expires_at, created_at);

CREATE TABLE events (
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    type TEXT NOT NULL,
    data JSONB NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (job_id, seq)
);

CREATE TABLE cache (
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    value JSONB NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (namespace, key)
);
""",
    ),
    (
        2,
        """
CREATE TABLE deliveries (
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    claims INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_token TEXT,
    lease_expires_at DOUBLE PRECISION,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (job_id, idx, name)
);
""",
    ),
    (
        3,
        """
ALTER TABLE jobs ADD COLUMN audio_s DOUBLE PRECISION NOT NULL DEFAULT 0;
CREATE INDEX jobs_owner_status ON jobs (owner, status);

CREATE TABLE api_keys (
    name TEXT NOT NULL,
    owner TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    last_used_at DOUBLE PRECISION,
    revoked_at DOUBLE PRECISION,
    quotas JSONB NOT NULL DEFAULT '{}'
);
CREATE UNIQUE INDEX api_keys_active_name ON api_keys (name) WHERE revoked_at IS NULL;
CREATE INDEX jobs_finished ON jobs (updated_at)
    WHERE status IN ('succeeded', 'failed', 'canceled');
""",
    ),
    (
        4,
        """
CREATE TABLE webhooks (
    job_id TEXT PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    url TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at DOUBLE PRECISION NOT NULL,
    lease_token TEXT,
    lease_expires_at DOUBLE PRECISION,
    last_error TEXT,
    last_status_code INTEGER,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    delivered_at DOUBLE PRECISION
);
CREATE INDEX webhooks_due ON webhooks (status, next_attempt_at);
""",
    ),
)
"""(version, SQL) in ascending order; each version is applied in one transaction."""
