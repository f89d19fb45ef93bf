"""What only the SQLite job store does: state survives reopening the file, and files written
before claims carried tokens are upgraded in place. The behaviour every backend shares is in
test_job_store_contract.py."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from serve.store.sqlite import SQLiteJobStore


def test_cache_and_jobs_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"

    async def scenario() -> None:
        store = SQLiteJobStore(path)
        job, _ = await store.create_job(owner="o", request={"x": 1}, seed=3, variations=1)
        await store.cache_put("lyrics", "k", {"text": "[verse]\nb", "repairs": ["x"]})
        await store.close()
        reopened = SQLiteJobStore(path)
        assert await reopened.cache_get("lyrics", "k") == {"text": "[verse]\nb", "repairs": ["x"]}
        again = await reopened.get_job(job.id)
        assert again is not None and again.request == {"x": 1}
        await reopened.close()

    asyncio.run(scenario())


def test_a_file_from_before_claim_tokens_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    old = sqlite3.connect(path)
    old.executescript(
        """
        CREATE TABLE jobs (id TEXT PRIMARY KEY, owner TEXT NOT NULL, idempotency_key TEXT,
            status TEXT NOT NULL, stage TEXT, progress REAL NOT NULL DEFAULT 0,
            request TEXT NOT NULL, seed INTEGER NOT NULL, lyrics TEXT, lyrics_source TEXT,
            tags TEXT, error TEXT, attempts INTEGER NOT NULL DEFAULT 0, lease_owner TEXT,
            lease_expires_at REAL, created_at REAL NOT NULL, updated_at REAL NOT NULL);
        CREATE TABLE stems (job_id TEXT NOT NULL, idx INTEGER NOT NULL, status TEXT NOT NULL,
            progress REAL NOT NULL DEFAULT 0, objects TEXT NOT NULL DEFAULT '{}',
            info TEXT NOT NULL DEFAULT '{}', error TEXT, attempts INTEGER NOT NULL DEFAULT 0,
            lease_owner TEXT, lease_expires_at REAL, created_at REAL NOT NULL,
            updated_at REAL NOT NULL, PRIMARY KEY (job_id, idx));
        INSERT INTO jobs (id, owner, status, request, seed, created_at, updated_at)
            VALUES ('song_old', 'o', 'queued', '{}', 1, 1.0, 1.0);
        """
    )
    old.commit()
    old.close()

    async def scenario() -> None:
        store = SQLiteJobStore(path)
        claimed = await store.claim_next("w", lease_s=30, max_attempts=3)
        assert claimed is not None and claimed.id == "song_old"
        assert claimed.lease_token is not None
        await store.update_job("song_old", claimed.lease_token, stage="tags")
        await store.close()

    asyncio.run(scenario())
