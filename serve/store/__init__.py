"""Durable state: the job store (SQLite embedded, Postgres in a cluster) and the object store
(local files embedded, S3 in a cluster), chosen by `storage.database_url` / `storage.storage_url`.

Backends import their drivers lazily, so the API and CLI start without psycopg or boto3 loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .metered import MeteredObjectStore
from .objects import (
    MASTER_CONTENT_TYPE,
    MASTER_INFO_CONTENT_TYPE,
    RAW_RENDER_CONTENT_TYPE,
    REPLICATE_PREDICTION_CONTENT_TYPE,
    REPLICATE_PREDICTIONS_ROOT,
    UPLOAD_AUDIO_NAME,
    UPLOAD_ID_PATTERN,
    UPLOAD_RECORD_NAME,
    UPLOADS_ROOT,
    VARIATION_AUDIO_PREFERENCE,
    ChecksumMismatch,
    ObjectInfo,
    ObjectStore,
    master_info_key,
    master_key,
    new_upload_id,
    raw_render_key,
    replicate_prediction_key,
    song_prefix,
    upload_created_at,
    upload_key,
    upload_location,
    upload_prefix,
    variation_audio_key,
    variation_key,
)
from .protocol import JobStore
from .records import (
    ACTIVE_STATUSES,
    ACTIVE_STEMS_STATUSES,
    FINISHED_STEMS_STATUSES,
    JOB_STATUSES,
    TERMINAL_EVENTS,
    TERMINAL_STATUSES,
    VARIATION_STATUSES,
    BacklogKey,
    DeliveryRecord,
    EventRecord,
    JobRecord,
    LeaseLost,
    ModelBacklog,
    StemsRecord,
    StoreUnavailable,
    VariationRecord,
    WebhookRecord,
    new_job_id,
)

if TYPE_CHECKING:
    from serve.config import StorageConfig

__all__ = [
    "ACTIVE_STATUSES",
    "ACTIVE_STEMS_STATUSES",
    "FINISHED_STEMS_STATUSES",
    "JOB_STATUSES",
    "MASTER_CONTENT_TYPE",
    "MASTER_INFO_CONTENT_TYPE",
    "RAW_RENDER_CONTENT_TYPE",
    "REPLICATE_PREDICTIONS_ROOT",
    "REPLICATE_PREDICTION_CONTENT_TYPE",
    "TERMINAL_EVENTS",
    "TERMINAL_STATUSES",
    "UPLOADS_ROOT",
    "UPLOAD_AUDIO_NAME",
    "UPLOAD_ID_PATTERN",
    "UPLOAD_RECORD_NAME",
    "VARIATION_AUDIO_PREFERENCE",
    "VARIATION_STATUSES",
    "BacklogKey",
    "ChecksumMismatch",
    "DeliveryRecord",
    "EventRecord",
    "JobRecord",
    "JobStore",
    "LeaseLost",
    "ModelBacklog",
    "ObjectInfo",
    "ObjectStore",
    "StemsRecord",
    "StoreUnavailable",
    "VariationRecord",
    "WebhookRecord",
    "check_stores",
    "master_info_key",
    "master_key",
    "new_job_id",
    "new_upload_id",
    "open_job_store",
    "open_object_store",
    "raw_render_key",
    "replicate_prediction_key",
    "song_prefix",
    "upload_created_at",
    "upload_key",
    "upload_location",
    "upload_prefix",
    "variation_audio_key",
    "variation_key",
]


def open_job_store(storage: StorageConfig) -> JobStore:
    """The job store `storage.database_url` (resolved) names."""
    database_url = storage.database_url
    scheme = database_url.partition("://")[0]
    if scheme == "sqlite":
        from .sqlite import SQLiteJobStore

        # SQLAlchemy's convention: sqlite:///relative.db, sqlite:////absolute.db
        return SQLiteJobStore(
            database_url.partition("://")[2][1:], poll_interval_s=storage.poll_interval_s
        )
    if scheme in ("postgresql", "postgres"):
        from .postgres import PostgresJobStore

        return PostgresJobStore(database_url, max_connections=storage.database_pool_size)
    raise ValueError(
        f"storage.database_url: unsupported scheme {scheme!r}; use sqlite:///PATH or "
        "postgresql://USER@HOST:PORT/DB"
    )


def open_object_store(storage: StorageConfig) -> MeteredObjectStore:
    """The object store `storage.storage_url` (resolved) names, its writes metered (the
    backend itself is `.inner`)."""
    return MeteredObjectStore(_open_backend(storage))


def _open_backend(storage: StorageConfig) -> ObjectStore:
    storage_url = storage.storage_url
    scheme, _, rest = storage_url.partition("://")
    if scheme == "file":
        from .files import FilesystemObjectStore

        return FilesystemObjectStore(rest)
    if scheme == "s3":
        from .s3 import S3ObjectStore

        return S3ObjectStore.from_url(storage_url, **s3_options(storage))
    raise ValueError(
        f"storage.storage_url: unsupported scheme {scheme!r}; use file://PATH or s3://BUCKET/PREFIX"
    )


def s3_options(storage: StorageConfig) -> dict[str, Any]:
    """How `storage` reaches its S3 store: endpoint, region and keys."""
    secret = storage.s3_secret_access_key
    return {
        "endpoint_url": storage.s3_endpoint_url,
        "region": storage.s3_region,
        "access_key_id": storage.s3_access_key_id,
        "secret_access_key": secret.get_secret_value() if secret is not None else None,
    }


def check_stores(storage: StorageConfig) -> None:
    """Fail fast: connect to both stores once (and apply the job store's migrations); raises
    ValueError naming the setting and what is wrong, never echoing a password."""
    scheme = storage.database_url.partition("://")[0]
    if scheme in ("postgresql", "postgres"):
        from .postgres_connect import check_database

        check_database(storage.database_url)
    else:
        _check_local_dir(storage.database_path.parent, "storage.database_url")
    if storage.storage_url.startswith("s3:"):
        from .s3 import S3ObjectStore

        S3ObjectStore.from_url(storage.storage_url, **s3_options(storage)).check()
    else:
        _check_local_dir(storage.storage_path, "storage.storage_url")


def _check_local_dir(path: Path, setting: str) -> None:
    import os

    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"{setting}: cannot create {path}: {error.strerror}") from None
    if not os.access(path, os.W_OK):
        raise ValueError(f"{setting}: {path} is not writable by this user")
