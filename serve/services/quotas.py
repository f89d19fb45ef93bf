"""Per-owner limits: what a caller may still spend (`GET /v1/usage`), the admission a new song is
checked under, and the 429 a refusal becomes (Retry-After and RateLimit-* headers).

Quotas count per UTC day. The queue limits (`jobs.max_queued_jobs`, `jobs.max_queued_per_owner`)
apply to everyone; `auth.quotas` are every owner's defaults and a managed key may carry its own.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

from serve.http.errors import ApiError
from serve.schemas import UsageItem, UsageOut
from serve.store.tenancy import Admission, AdmissionRefused

if TYPE_CHECKING:
    from serve.config import AppConfig
    from serve.http.auth import Caller
    from serve.store import JobStore

DAY_S = 86400.0

_MESSAGES = {
    "too_many_queued": "too many songs are waiting; retry later",
    "owner_queue_full": "you have as many songs waiting as one caller may (jobs.max_queued_per_"
    "owner); retry when some have started",
    "concurrent_jobs": "you have as many songs queued or running as your key allows "
    "(concurrent_jobs); retry when one finishes",
    "songs_per_day": "your key's songs for today are used up (songs_per_day); they renew at "
    "00:00 UTC",
    "audio_seconds_per_day": "this song would pass your key's seconds of audio for today "
    "(audio_seconds_per_day); ask for less, or wait for 00:00 UTC",
}
_DAILY = frozenset({"songs_per_day", "audio_seconds_per_day"})


def day_start(now: float) -> float:
    return math.floor(now / DAY_S) * DAY_S


class Quotas:
    def __init__(self, config: AppConfig, jobs: JobStore, clock: Any = time.time) -> None:
        self._config = config
        self._jobs = jobs
        self._clock = clock

    def limits(self, caller: Caller) -> dict[str, Any]:
        """The caller's quotas: its key's own over `auth.quotas`."""
        defaults = self._config.auth.quotas.model_dump()
        return defaults | {k: v for k, v in caller.quotas.items() if k in defaults}

    def admission(self, caller: Caller) -> Admission:
        limits = self.limits(caller)
        jobs = self._config.jobs
        return Admission(
            max_queued=jobs.max_queued_jobs,
            max_queued_per_owner=jobs.max_queued_per_owner,
            concurrent_jobs=limits["concurrent_jobs"],
            songs_per_day=limits["songs_per_day"],
            audio_seconds_per_day=limits["audio_seconds_per_day"],
            day_start=day_start(self._clock()),
        )

    def _reset_s(self) -> int:
        now = self._clock()
        return max(1, math.ceil(day_start(now) + DAY_S - now))

    def refusal(self, refused: AdmissionRefused) -> ApiError:
        """A 429 naming the limit, with when to retry and the limit's RateLimit-* headers."""
        daily = refused.reason in _DAILY
        retry_after = self._reset_s() if daily else self._config.api.overload_retry_after_s
        headers = {
            "Retry-After": str(retry_after),
            "RateLimit-Limit": f"{refused.limit:g}",
            "RateLimit-Remaining": f"{max(refused.limit - refused.used, 0):g}",
            "RateLimit-Reset": str(retry_after),
        }
        return ApiError(429, refused.reason, _MESSAGES[refused.reason], None, headers)

    async def usage(self, caller: Caller) -> UsageOut:
        limits = self.limits(caller)
        start = day_start(self._clock())
        used = await self._jobs.owner_usage(caller.owner, start)
        return UsageOut(
            key=caller.key_name,
            day_started_at=start,
            resets_in_s=self._reset_s(),
            concurrent_jobs=UsageItem(used=used.active, limit=limits["concurrent_jobs"]),
            queued_jobs=UsageItem(used=used.queued, limit=self._config.jobs.max_queued_per_owner),
            songs_today=UsageItem(used=used.songs_today, limit=limits["songs_per_day"]),
            audio_seconds_today=UsageItem(
                used=round(used.audio_seconds_today, 3), limit=limits["audio_seconds_per_day"]
            ),
        )
