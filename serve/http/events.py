"""A song's Server-Sent Events: its logged events from the job store, replayed after
`Last-Event-ID`, then followed live until the song ended (done, error or canceled) and no stems
job of it is still under way. While the song is queued, a `queue` frame (no id: it is not in the
log) tells its place whenever it changes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from serve.store import FINISHED_STEMS_STATUSES, TERMINAL_EVENTS, StoreUnavailable

from .errors import ApiError

if TYPE_CHECKING:
    from serve.services import ApiServices

_TERMINAL_EVENTS = frozenset(TERMINAL_EVENTS.values())  # of the song; stems may still follow
# How often an SSE stream of a queued song looks at its place in line (other songs move it).
_QUEUE_POLL_S = 1.0
# Event ids are the log's sequence numbers: a store integer (64-bit signed).
MAX_EVENT_ID = 2**63 - 1


def parse_last_event_id(header: str | None) -> int:
    """`Last-Event-ID` as the sequence number to resume after (0: from the start). An id that
    cannot be one of ours is refused, so a client never loops reconnecting on it."""
    if header is None or header.strip() == "":
        return 0
    value = header.strip()
    if not (value.isascii() and value.isdigit()) or len(value) > 19 or int(value) > MAX_EVENT_ID:
        raise ApiError(
            422,
            "invalid_request",
            "Last-Event-ID must be the id of an event this stream sent (an integer ≥ 0)",
            "Last-Event-ID",
        )
    return int(value)


def format_sse(seq: int, event_type: str, data: dict[str, Any]) -> str:
    return f"id: {seq}\nevent: {event_type}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


class EventStreams:
    """The streams of one ingress replica. Each holds one of the replica's ongoing requests for
    a whole song, so they have a budget of their own (`api.max_event_streams`, and
    `api.max_event_streams_per_owner` per caller) that leaves room for every other call."""

    def __init__(self, services: ApiServices) -> None:
        self._services = services
        self._subscribers = 0
        self._by_owner: dict[str, int] = {}

    async def open(self, song_id: str, owner: str, after: int) -> AsyncIterator[str]:
        """The frames of `song_id`'s stream; 404 before the stream starts when it is not the
        caller's, 429 or 503 when the streams' budget is spent."""
        api = self._services.config.api
        retry_after = {"Retry-After": str(api.overload_retry_after_s)}
        if self._by_owner.get(owner, 0) >= api.max_event_streams_per_owner:
            raise ApiError(
                429,
                "too_many_streams",
                f"you have {api.max_event_streams_per_owner} event streams open here "
                "(api.max_event_streams_per_owner); close one, or read the song with GET",
                None,
                retry_after,
            )
        if self._subscribers >= api.max_event_streams:
            raise ApiError(
                503,
                "too_many_streams",
                "this server holds as many event streams as it may (api.max_event_streams); "
                "retry later, or poll GET /v1/songs/{id}",
                None,
                retry_after,
            )
        job = await self._services.songs.owned_job(song_id, owner)
        queue_of = job.request if job.status == "queued" else None
        return self._subscribed(owner, self._frames(song_id, owner, after, queue_of))

    async def _subscribed(self, owner: str, frames: AsyncIterator[str]) -> AsyncIterator[str]:
        """`frames`, counted (in `songserve_sse_subscribers` too) while the client listens."""
        from serve.metrics import song_metrics

        self._subscribers += 1
        self._by_owner[owner] = self._by_owner.get(owner, 0) + 1
        song_metrics().sse_subscribers.set(self._subscribers)
        try:
            async for frame in frames:
                yield frame
        finally:
            self._subscribers -= 1
            self._by_owner[owner] -= 1
            if not self._by_owner[owner]:
                del self._by_owner[owner]
            song_metrics().sse_subscribers.set(self._subscribers)

    async def _frames(
        self, job_id: str, owner: str, after: int, queue_of: dict[str, Any] | None = None
    ) -> AsyncIterator[str]:
        """`queue_of`: the song's request while it is queued (its place is then watched)."""
        services = self._services
        jobs = services.jobs
        keepalive_s = services.config.api.sse_keepalive_s
        yield "retry: 2000\n\n"
        loop = asyncio.get_running_loop()
        last_sent = loop.time()
        position: int | None = None
        # A stream resumed past the end closes at once; after that the song's status is read only
        # when an event may have ended it or on keep-alive, so an idle stream costs no queries
        # on Postgres (LISTEN/NOTIFY wakes it).
        check_status = True
        while True:
            try:
                if (
                    check_status
                    and await self._nothing_more(job_id)
                    and not await jobs.events_after(job_id, after, limit=1)
                ):
                    return
                if queue_of is not None:
                    queue = await services.songs.queue_out(job_id, queue_of)
                    if queue is None:
                        queue_of = None  # it left the queue: its events tell the rest
                    elif queue.position != position:
                        position = queue.position
                        last_sent = loop.time()
                        yield f"event: queue\ndata: {queue.model_dump_json()}\n\n"
                # While queued, look at the place every _QUEUE_POLL_S (other songs move it).
                wait_s = keepalive_s if queue_of is None else min(keepalive_s, _QUEUE_POLL_S)
                events = await jobs.wait_for_events(job_id, after, wait_s)
            except StoreUnavailable:
                # A database restart: keep the client connected and carry on where it was,
                # rather than cutting the response (it would reconnect, but noisily).
                yield ": the job store is unavailable; waiting\n\n"
                await asyncio.sleep(min(keepalive_s, 1.0))
                continue
            # Read the status after a quiet wait (a keep-alive's), not after each look at a
            # queued song's place: the place says when it left the line, its log when it ended.
            check_status = not events and queue_of is None
            if events:
                last_sent = loop.time()
            for event in events:
                data = services.views.event(job_id, owner, event)
                yield format_sse(event.seq, event.type, data)
                after = event.seq
                check_status |= event.type in _TERMINAL_EVENTS or (
                    event.type == "stems" and event.data.get("status") in FINISHED_STEMS_STATUSES
                )
            if not events and loop.time() - last_sent >= keepalive_s - 0.01:
                last_sent = loop.time()
                yield ": keep-alive\n\n"

    async def _nothing_more(self, job_id: str) -> bool:
        """Whether a song will log no more events: it ended and no stems job is under way."""
        jobs = self._services.jobs
        job = await jobs.get_job(job_id)
        if job is None:
            return True
        if not job.is_terminal:
            return False
        return not any(stems.is_active for stems in await jobs.list_stems(job_id))
