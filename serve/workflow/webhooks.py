"""Webhook delivery: the signed POST a song's `callback_url` gets when the song succeeds or fails.

Each conductor replica runs a `WebhookDispatcher`. The store holds one webhook per song that asked
for one, written in the transaction that accepted the song, so no ended song can miss its
delivery. A dispatcher claims due webhooks under a lease (`webhooks.lease_s`), POSTs, and records
the outcome under that claim: `delivered` on a 2xx, else `pending` again after a backoff
(`webhooks.backoff_s`, doubled each time with jitter, at least the receiver's Retry-After), and
`failed` once `webhooks.max_attempts` are used. A replica that dies mid-delivery leaves its lease
to expire, and another delivers again with the same `webhook-id`: delivery is at least once, and
receivers dedupe on that id. A canceled song's webhook is `skipped`: the caller canceled it.

Events: `song.succeeded` and `song.failed`; `data` is the song as `GET /v1/songs/{id}` shows it
(signed media links included, valid for `auth.media_url_ttl_s`). Signatures: serve/webhooks.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from serve.webhooks import CallbackRefused, check_callback_addresses, check_callback_url

if TYPE_CHECKING:
    import httpx

    from serve.config import WebhooksConfig
    from serve.store import JobRecord, JobStore, WebhookRecord

logger = logging.getLogger("ray.serve")

SongDescriber = Callable[["JobRecord"], Awaitable[dict[str, Any]]]
"""The song as the API shows it (`GET /v1/songs/{id}`), for a delivery's `data`."""


@dataclass(frozen=True)
class Outcome:
    """How one attempt ended: the webhook's next status, and why."""

    status: str  # delivered | pending | failed | skipped
    error: str | None = None
    status_code: int | None = None
    retry_in_s: float | None = None


class WebhookDispatcher:
    def __init__(
        self,
        config: WebhooksConfig,
        store: JobStore,
        describe: SongDescriber,
        *,
        metrics: Any = None,
    ) -> None:
        """`metrics`: a counter with an `outcome` tag (songserve_webhook_deliveries), or None."""
        assert config.signing_secret is not None, "resolve_config requires a signing secret"
        self._config = config
        self._store = store
        self._describe = describe
        self._secret = config.signing_secret.get_secret_value()
        self._metrics = metrics
        self._in_flight: set[asyncio.Task[Any]] = set()
        self._client: httpx.AsyncClient | None = None

    async def run_forever(self) -> None:
        """Deliver what is due, at most `webhooks.max_concurrent` at once, looking again every
        `webhooks.poll_interval_s` (and as soon as a delivery ends)."""
        freed = asyncio.Event()
        try:
            while True:
                freed.clear()
                try:
                    await self.start_due(on_done=freed.set)
                except Exception:  # the store is down: look again later
                    logger.warning("looking for webhooks to deliver failed", exc_info=True)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(freed.wait(), self._config.poll_interval_s)
        finally:
            for task in list(self._in_flight):
                task.cancel()
            await asyncio.gather(*self._in_flight, return_exceptions=True)
            if self._client is not None:
                await self._client.aclose()

    async def start_due(self, on_done: Callable[[], None] = lambda: None) -> int:
        """Claim and start deliveries while there are free slots; returns how many started."""
        started = 0
        while len(self._in_flight) < self._config.max_concurrent:
            record = await self._store.claim_webhook(lease_s=self._config.lease_s)
            if record is None:
                break
            task = asyncio.create_task(self.deliver(record), name=f"webhook-{record.job_id}")
            self._in_flight.add(task)
            task.add_done_callback(functools.partial(self._ended, on_done=on_done))
            started += 1
        return started

    def _ended(self, task: asyncio.Task[Any], *, on_done: Callable[[], None]) -> None:
        self._in_flight.discard(task)
        on_done()

    async def deliver(self, record: WebhookRecord) -> Outcome:
        """One attempt at a claimed webhook, its outcome recorded under the claim."""
        try:
            outcome = await self._attempt(record)
        except Exception as error:  # any failure is a failed attempt, retried
            logger.warning("webhook of %s: %s", record.job_id, error, exc_info=True)
            outcome = self._retry(record, f"{type(error).__name__}: {error}", None, None)
        assert record.lease_token is not None
        kept = await self._store.finish_webhook(
            record.job_id,
            record.lease_token,
            status=outcome.status,
            retry_in_s=outcome.retry_in_s,
            error=outcome.error,
            status_code=outcome.status_code,
        )
        if self._metrics is not None:
            self._metrics.inc(tags={"outcome": outcome.status})
        log = logger.info if outcome.status in ("delivered", "skipped") else logger.warning
        log(
            "webhook of %s (attempt %d): %s%s%s",
            record.job_id,
            record.attempts,
            outcome.status,
            f" ({outcome.error})" if outcome.error else "",
            "" if kept else " [the claim had expired: another replica delivers it]",
        )
        return outcome

    async def _attempt(self, record: WebhookRecord) -> Outcome:
        job = await self._store.get_job(record.job_id)
        if job is None or job.status == "canceled":
            return Outcome("skipped", "the song was canceled" if job else "the song was deleted")
        try:
            host, port = check_callback_url(record.url, self._config)
        except CallbackRefused as refused:  # the configuration changed since it was accepted
            return Outcome("failed", str(refused))
        try:
            await check_callback_addresses(host, port, self._config)
        except CallbackRefused as refused:  # DNS may change back: retried
            return self._retry(record, str(refused), None, None)
        payload = {
            "type": f"song.{job.status}",
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "data": await self._describe(job),
        }
        body = json.dumps(payload, separators=(",", ":")).encode()
        response = await self._http().post(
            record.url, content=body, headers=self._headers(record, body)
        )
        if 200 <= response.status_code < 300:
            return Outcome("delivered", status_code=response.status_code)
        reason = f"the receiver answered {response.status_code}"
        if 300 <= response.status_code < 400:
            reason += " (redirects are not followed: give the final URL)"
        retry_after = _seconds(response.headers.get("retry-after"))
        return self._retry(record, reason, response.status_code, retry_after)

    def _headers(self, record: WebhookRecord, body: bytes) -> dict[str, str]:
        from serve.webhooks import signed_headers

        headers = signed_headers(self._secret, record.id, body, int(time.time()))
        return {**headers, "user-agent": "songserve-webhooks/1"}

    def _retry(
        self,
        record: WebhookRecord,
        reason: str,
        status_code: int | None,
        retry_after_s: float | None,
    ) -> Outcome:
        config = self._config
        if record.attempts >= config.max_attempts:
            return Outcome("failed", f"{reason}; gave up after {record.attempts} attempts")
        wait = min(config.backoff_max_s, config.backoff_s * 2 ** (record.attempts - 1))
        wait *= random.uniform(0.8, 1.2)  # receivers coming back are not hit all at once
        if retry_after_s is not None:
            wait = max(wait, min(retry_after_s, config.backoff_max_s))
        return Outcome("pending", reason, status_code, round(wait, 3))

    def _http(self) -> httpx.AsyncClient:
        import httpx

        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self._config.timeout_s, follow_redirects=False, trust_env=False
            )
        return self._client


def _seconds(retry_after: str | None) -> float | None:
    """A Retry-After of delay seconds (an HTTP date is ignored: the backoff applies)."""
    if retry_after is None or not retry_after.strip().isdigit():
        return None
    return float(retry_after.strip())
