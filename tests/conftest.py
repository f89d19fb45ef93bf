"""Fixtures every test tier may use: a real PostgreSQL and a real S3 (SeaweedFS), each started once
per session on free loopback ports, with a fresh database / bucket per test.

Missing server binaries make these fixtures fail, not skip: CI installs them, and a skipped store
test would hide a broken backend. Nothing here imports Ray (tests/unit forbids starting it).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from serve.local_services import LocalPostgres, LocalSeaweedFS
from tests.helpers import throwaway_postgres


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[LocalPostgres]:
    """One throwaway PostgreSQL for the session."""
    with throwaway_postgres() as server:
        yield server


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSeaweedFS]:
    """One throwaway SeaweedFS (S3 API) for the session."""
    server = LocalSeaweedFS(tmp_path_factory.mktemp("seaweedfs"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def tiny_acestep_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random-weight ACE-Step checkpoint (diffusers layout, with two LoRAs), built once
    per session: every tier's ACE-Step tests only read it."""
    pytest.importorskip("diffusers")
    from pipeline.tiny.acestep import build_tiny_acestep

    return build_tiny_acestep(tmp_path_factory.mktemp("tiny-acestep") / "tiny")


@pytest.fixture
def postgres_url(postgres_server: LocalPostgres) -> str:
    """A fresh, empty database of its own: postgresql://postgres@127.0.0.1:PORT/t_…"""
    return postgres_server.create_database(f"t_{uuid.uuid4().hex}")


@pytest.fixture
def s3_url(seaweedfs: LocalSeaweedFS, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh, empty bucket of its own: s3://BUCKET, with AWS_* and SONGSERVE_S3_ENDPOINT_URL
    set so `S3ObjectStore.from_url` (and any boto3 client) reaches it."""
    bucket = f"t-{uuid.uuid4().hex[:20]}"
    seaweedfs.create_bucket(bucket)
    for name, value in seaweedfs.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    yield f"s3://{bucket}"
    # Each bucket holds a SeaweedFS volume; give it back so a long session never runs out.
    # Cleanup must not mask the test's own outcome.
    with contextlib.suppress(Exception):
        seaweedfs.s3_client().delete_bucket(Bucket=bucket)  # weed deletes non-empty ones too
