"""`JobStore` — the contract every job-store backend keeps (SQLite embedded, Postgres in a cluster).

Work (song jobs, and stems jobs of one variation each) is *claimed*: the store leases it to a worker
with an expiry from the store's own clock and a fresh claim token. Every write that belongs to
claimed work passes that token and is refused with `LeaseLost` once the work was claimed again,
by another worker or by the same one, so two tasks can never drive one job. A claim that runs out
of attempts fails the work with a reason instead of crash-looping.

The event log of a job is append-only with dense sequence numbers; SSE streams replay it and
resume from `Last-Event-ID`. `wait_for_events` and `wait_for_work` let readers sleep until
something happens instead of each polling (LISTEN/NOTIFY on Postgres; on SQLite, one poll of the
database's version per store, shared by all its waiters).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Protocol

from .records import (
    BacklogKey,
    DeliveryRecord,
    EventRecord,
    JobRecord,
    ModelBacklog,
    PoolRenders,
    QueuePlace,
    StemsRecord,
    WebhookRecord,
)
from .tenancy import Admission, ApiKeyRecord, OwnerUsage


class JobStore(Protocol):
    """Durable job state. All methods are safe to call from many processes at once."""

    # -- songs --------------------------------------------------------------------------------

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
        """Insert a queued job; with an idempotency key already used by `owner`, return that job.
        The bool says whether a job was created. `audio_s`: the audio it asks for (duration ×
        variations, counted against daily quotas). With `admission`, the job is admitted in
        the same transaction as the counts it is checked against; AdmissionRefused otherwise.
        With `callback_url`, its webhook is stored in the same transaction (due once it ends)."""
        ...

    async def owner_usage(self, owner: str, day_start: float) -> OwnerUsage:
        """`owner`'s queued and running jobs, and the jobs and audio it asked for since
        `day_start`."""
        ...

    async def get_job(self, job_id: str) -> JobRecord | None: ...

    async def count_jobs(self, status: str) -> int:
        """How many jobs are in `status` (admission control reads the queue depth)."""
        ...

    async def list_jobs(
        self, owner: str, *, limit: int, cursor: str | None = None, search: str | None = None
    ) -> tuple[list[JobRecord], str | None]:
        """Newest first; returns the page and the cursor of the next page (None at the end).
        With `search`, only songs whose prompt, title, style or lyrics contain every word of it
        (case-insensitive; `search_words`). Raises ValueError for a cursor this store did not
        issue."""
        ...

    async def claim_next(
        self,
        worker: str,
        *,
        lease_s: float,
        max_attempts: int,
        exclude: Collection[str] = (),
    ) -> JobRecord | None:
        """Atomically lease the oldest runnable job (queued, or running with an expired lease)
        to `worker`, skipping the ids in `exclude` (what the worker drives already). The record
        carries the claim's `lease_token`. Jobs whose attempts are exhausted are failed on the
        way, with an `error` event."""
        ...

    async def renew_lease(self, job_id: str, token: str, *, lease_s: float) -> None:
        """Extend the lease from now; raises LeaseLost when `token` no longer holds it. A lease
        that expired but was not claimed again is still the token's."""
        ...

    async def release(self, job_id: str, token: str) -> None:
        """Hand a running job back for anyone to claim now (a clean stop, not a crash: the
        attempt is not counted). A no-op when `token` no longer holds it."""
        ...

    async def update_job(self, job_id: str, token: str, **fields: Any) -> None:
        """Set job fields (stage results, status, progress) under the lease; a terminal status
        ends it. Raises LeaseLost."""
        ...

    async def update_variation(self, job_id: str, index: int, token: str, **fields: Any) -> None:
        """Set variation fields under the job's lease; raises LeaseLost."""
        ...

    async def cancel_job(self, job_id: str) -> JobRecord | None:
        """Cancel a queued or running job in one transaction: it and its unfinished variations
        become `canceled`, its lease ends (the driving claim's next write raises LeaseLost) and
        a `canceled` event ends its log. A finished job is returned as it is; None when there
        is no such job."""
        ...

    # -- load (pool choice, queue estimates) ----------------------------------------------------

    async def renders_by_pool(self) -> dict[str, PoolRenders]:
        """Renders in flight on each decoder pool across the cluster: `running` variations whose
        `render` names the pool rendering them (`{"pool": name}`, recorded by the conductor when
        the router picked it), of jobs whose lease is live. Pools with none are left out."""
        ...

    async def queue_place(self, job_id: str) -> QueuePlace | None:
        """Where a `queued` job stands: runnable jobs ahead of it in `claim_next`'s order, and
        the audio seconds still to render before it (the unrendered variations of jobs being
        driven and of jobs ahead). None when the job is not queued (or does not exist)."""
        ...

    async def queue_places(self) -> dict[str, QueuePlace]:
        """`queue_place` of every queued job, read at once (one pass over the live jobs): what
        the API's streams of queued songs share instead of asking one by one."""
        ...

    async def backlog_by_request(self) -> dict[BacklogKey, ModelBacklog]:
        """Unrendered variations of queued and running songs by requested model (`auto`
        included), task and language (`BacklogKey`), for backlog autoscaling: `rendering` are
        `running` variations without a stored render in jobs whose lease is live, `waiting` all
        the others (a queued song's, a variation not started, or one whose claim expired). Keys
        with none are left out."""
        ...

    # -- events -------------------------------------------------------------------------------

    async def append_event(
        self,
        job_id: str,
        event_type: str,
        data: dict[str, Any],
        *,
        token: str | None = None,
        job_fields: dict[str, Any] | None = None,
    ) -> int:
        """Append an event (and optionally update job fields in the same transaction, fenced by
        `token`); returns its sequence number. KeyError when there is no such job."""
        ...

    async def events_after(
        self, job_id: str, after_seq: int, limit: int = 500
    ) -> list[EventRecord]:
        """Events with seq > after_seq, oldest first."""
        ...

    async def wait_for_events(
        self, job_id: str, after_seq: int, timeout: float
    ) -> list[EventRecord]:
        """Events with seq > after_seq as soon as there are any, or [] after `timeout` seconds."""
        ...

    async def wait_for_work(self, timeout: float) -> None:
        """Return when work may have become claimable (a job or stems job queued or handed back),
        or after `timeout` seconds. Expired leases notify nobody: callers claim on timeout too."""
        ...

    # -- stems --------------------------------------------------------------------------------

    async def request_stems(self, job_id: str, index: int) -> tuple[StemsRecord, bool]:
        """Queue the stems of a variation, with a `stems` event on the song's log. A queued,
        running or finished stems job is returned as it is; a failed one is queued again. The
        bool says whether a job was queued. KeyError when there is no such job."""
        ...

    async def get_stems(self, job_id: str, index: int) -> StemsRecord | None: ...

    async def list_stems(self, job_id: str) -> list[StemsRecord]:
        """Every stems job of a song, by variation."""
        ...

    async def claim_next_stems(
        self,
        worker: str,
        *,
        lease_s: float,
        max_attempts: int,
        exclude: Collection[tuple[str, int]] = (),
    ) -> StemsRecord | None:
        """Lease the oldest runnable stems job, as `claim_next` does for songs (exhausted ones
        fail on the way, with a `stems` event)."""
        ...

    async def renew_stems_lease(
        self, job_id: str, index: int, token: str, *, lease_s: float
    ) -> None:
        """Extend a stems lease; raises LeaseLost when `token` no longer holds it."""
        ...

    async def release_stems(self, job_id: str, index: int, token: str) -> None:
        """Hand a running stems job back (a clean stop: the attempt is not counted)."""
        ...

    async def update_stems(
        self,
        job_id: str,
        index: int,
        token: str,
        *,
        event: tuple[str, dict[str, Any]] | None = None,
        **fields: Any,
    ) -> None:
        """Set stems fields under its lease, and append `event` (type, data) to the song's log in
        the same transaction; raises LeaseLost."""
        ...

    # -- files made on request (lazy formats) ------------------------------------------------

    async def add_variation_object(self, job_id: str, index: int, name: str, key: str) -> None:
        """Record object `key` as file `name` (e.g. "mp3") of a finished variation. Unfenced: it
        adds to a variation whose job's lease has ended, and never changes anything else.
        KeyError when there is no such variation, or it has not succeeded."""
        ...

    async def claim_delivery(
        self, job_id: str, index: int, name: str, worker: str, *, lease_s: float
    ) -> str | None:
        """Lease the making of file `name` of a variation to `worker`; returns the claim's token,
        or None while another claim's lease runs or once the file was delivered. An expired
        claim is taken over. KeyError when there is no such job."""
        ...

    async def finish_delivery(
        self, job_id: str, index: int, name: str, token: str, *, delivered: bool
    ) -> None:
        """End a claim: `delivered` (no one claims the file again), or handed back for the next
        request to claim at once. A no-op when `token` no longer holds the claim."""
        ...

    async def get_delivery(self, job_id: str, index: int, name: str) -> DeliveryRecord | None:
        """The claim record of a file made on request, or None if it was never claimed."""
        ...

    # -- cache --------------------------------------------------------------------------------

    async def cache_get(self, namespace: str, key: str) -> Any | None:
        """A value `cache_put` stored under (namespace, key), or None."""
        ...

    async def cache_put(self, namespace: str, key: str, value: Any) -> None:
        """Store a JSON-serialisable value under (namespace, key), replacing any older one."""
        ...

    async def close(self) -> None: ...

    # -- managed API keys (only hashes are stored) ----------------------------------------------

    async def add_api_key(self, key: ApiKeyRecord) -> None:
        """Store a new key; ValueError when an active key has its name."""
        ...

    async def list_api_keys(self) -> list[ApiKeyRecord]:
        """Every key, revoked ones included, oldest first."""
        ...

    async def revoke_api_key(self, name: str) -> bool:
        """Revoke the active key called `name`; False when there is none."""
        ...

    async def find_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        """The active key with this hash."""
        ...

    async def count_api_keys(self) -> int:
        """Active keys."""
        ...

    async def touch_api_key(self, name: str) -> None:
        """Record that the key was used now."""
        ...

    async def shared_secret(self, name: str) -> str:
        """A random secret stored under `name`, the same for every replica (made on first use)."""
        ...

    # -- webhooks (serve/workflow/webhooks.py) --------------------------------------------------

    async def claim_webhook(self, *, lease_s: float) -> WebhookRecord | None:
        """Lease the webhook due first (its song ended, its retry time came, no live lease)
        with a fresh token, counting the attempt; None when none is due."""
        ...

    async def finish_webhook(
        self,
        job_id: str,
        token: str,
        *,
        status: str,
        retry_in_s: float | None = None,
        error: str | None = None,
        status_code: int | None = None,
    ) -> bool:
        """End a claim: `delivered`, `failed`, `skipped`, or `pending` again, due in
        `retry_in_s`. False (nothing written) when `token` no longer holds the claim."""
        ...

    async def get_webhook(self, job_id: str) -> WebhookRecord | None: ...

    # -- deletion and retention -----------------------------------------------------------------

    async def delete_job(self, job_id: str) -> bool:
        """Delete a job and everything recorded of it; False when there was none."""
        ...

    async def jobs_finished_before(self, before: float, limit: int) -> list[str]:
        """Ids of finished jobs last updated before `before`, oldest first, at most `limit`."""
        ...
