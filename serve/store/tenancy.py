"""What the job store keeps about tenants: API keys (hashed) and what each owner may still spend.

Admission is decided inside the transaction that creates the job, against counts read in that
same transaction, so concurrent requests on any number of API replicas can never admit more than
the limits allow (SQLite: `BEGIN IMMEDIATE`; Postgres: a transaction-scoped advisory lock).
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

# The advisory lock every Postgres admission takes (an arbitrary constant: "songserve").
ADMISSION_LOCK_ID = 0x736F6E67


@dataclass(frozen=True)
class Admission:
    """The limits a new job is admitted under. None: no such limit."""

    max_queued: int  # queued jobs in the whole store
    max_queued_per_owner: int | None = None  # queued jobs of one owner (fair share of the queue)
    concurrent_jobs: int | None = None  # queued + running jobs of one owner
    songs_per_day: int | None = None  # jobs created by one owner since `day_start`
    audio_seconds_per_day: float | None = None  # audio those jobs asked for
    day_start: float = 0.0  # epoch seconds: the start of the owner's current quota day


@dataclass(frozen=True)
class OwnerUsage:
    """An owner's jobs now and since the start of the quota day."""

    active: int  # queued + running
    queued: int
    songs_today: int
    audio_seconds_today: float

    @classmethod
    def from_row(cls, row: Any) -> OwnerUsage:
        """From the usage query's row of either backend (read by column name)."""
        return cls(
            active=int(row["active"]),
            queued=int(row["queued"]),
            songs_today=int(row["songs"]),
            audio_seconds_today=float(row["audio_s"]),
        )


class AdmissionRefused(Exception):
    """A job was not created: `reason` names the limit, `used` and `limit` what stood against it."""

    def __init__(self, reason: str, used: float, limit: float) -> None:
        super().__init__(f"{reason}: {used:g} of {limit:g} used")
        self.reason, self.used, self.limit = reason, used, limit


def check_admission(
    admission: Admission, queued_total: int, usage: OwnerUsage, audio_s: float
) -> None:
    """Raise AdmissionRefused for the first limit this job would pass."""
    checks: list[tuple[str, float, float | None, float]] = [
        ("concurrent_jobs", usage.active, admission.concurrent_jobs, 1),
        ("songs_per_day", usage.songs_today, admission.songs_per_day, 1),
        (
            "audio_seconds_per_day",
            usage.audio_seconds_today,
            admission.audio_seconds_per_day,
            audio_s,
        ),
        ("owner_queue_full", usage.queued, admission.max_queued_per_owner, 1),
        ("too_many_queued", queued_total, admission.max_queued, 1),
    ]
    for reason, used, limit, adding in checks:
        if limit is not None and used + adding > limit:
            raise AdmissionRefused(reason, used, limit)


@dataclass(frozen=True)
class ApiKeyRecord:
    """A managed API key: only its hash is stored, and a prefix to recognise it by."""

    name: str
    owner: str  # opaque id the key's songs and LoRAs are stored under
    key_hash: str  # sha256 hex of the key
    prefix: str  # the key's first characters, shown by `keys list`
    created_at: float
    last_used_at: float | None = None
    revoked_at: float | None = None
    quotas: dict[str, Any] = field(default_factory=dict)  # overrides of auth.quotas

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    @classmethod
    def from_row(cls, row: Any) -> ApiKeyRecord:
        """From an `api_keys` row of either backend (quotas: JSON text or a decoded JSONB)."""
        quotas = row["quotas"]
        return cls(
            name=row["name"],
            owner=row["owner"],
            key_hash=row["key_hash"],
            prefix=row["prefix"],
            created_at=row["created_at"],
            last_used_at=row["last_used_at"],
            revoked_at=row["revoked_at"],
            quotas=json.loads(quotas) if isinstance(quotas, str) else dict(quotas),
        )


KEY_PREFIX = "ss_"


def new_api_key() -> str:
    """A fresh key: `ss_` and 43 URL-safe characters (256 random bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_owner_id() -> str:
    """The owner id of a managed key: random, so nothing about the key can be read from it."""
    return f"own_{secrets.token_hex(12)}"
