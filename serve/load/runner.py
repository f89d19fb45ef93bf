"""The open-loop load generator: submit songs on schedule, follow each one's SSE stream.

Each arrival gets its own task that POSTs the song at its scheduled time, whatever the songs
before it are doing, then follows `GET /v1/songs/{id}/events` until `done` or `error`
(reconnecting with `Last-Event-ID` if the stream breaks). After the schedule (or `max_songs`),
nothing more is submitted; songs still going get `drain_s` seconds to finish, then are recorded
as unfinished.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .arrivals import plan_steps, poisson_arrivals
from .profile import LoadProfile
from .records import LoadRun, SongRecord, admission_of

if TYPE_CHECKING:
    import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
_STREAM_RETRIES = 5


@dataclass
class LoadOptions:
    """What to offer and for how long. Rates are songs per second."""

    rates_per_s: list[float]
    step_s: float
    duration_s: float | None = None  # cut the schedule here (None: every step in full)
    max_songs: int | None = None
    drain_s: float = 300.0
    seed: int = 0
    url: str = DEFAULT_URL
    api_key: str | None = None
    profile: LoadProfile = field(default_factory=LoadProfile)
    request_timeout_s: float = 30.0  # for the POST (the event streams have no read timeout)


async def run_load(options: LoadOptions, log: Callable[[str], None] | None = None) -> LoadRun:
    """Run the schedule against `options.url` and return every song's record.

    Raises ValueError naming the option for a schedule that cannot run."""
    import httpx

    if options.max_songs is not None and options.max_songs < 1:
        raise ValueError(f"--max-songs must be ≥ 1, got {options.max_songs}")
    if options.drain_s < 0:
        raise ValueError(f"--drain-s must be ≥ 0, got {options.drain_s}")
    steps = plan_steps(options.rates_per_s, options.step_s, options.duration_s)
    arrivals = poisson_arrivals(steps, options.seed, options.max_songs)
    # Bodies from their own stream: the same seed gives the same songs at the same times.
    bodies = random.Random(f"bodies-{options.seed}")
    records = [
        SongRecord(index=k, step=a.step, scheduled_at_s=a.at_s, body=options.profile.draw(bodies))
        for k, a in enumerate(arrivals)
    ]
    headers = {"Authorization": f"Bearer {options.api_key}"} if options.api_key else {}
    # No connection cap: every song in flight holds an event stream open, and a cap would hold
    # back new submissions (closing the loop).
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
    timeout = httpx.Timeout(options.request_timeout_s)
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    async with httpx.AsyncClient(
        base_url=options.url, headers=headers, timeout=timeout, limits=limits
    ) as client:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        tasks: list[asyncio.Task[None]] = []
        next_step = 0
        for record in records:
            while next_step < len(steps) and steps[next_step].start_s <= record.scheduled_at_s:
                _log_step(log, steps, next_step, records, tasks)
                next_step += 1
            delay = t0 + record.scheduled_at_s - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(_song(client, record, t0)))
        capped = options.max_songs is not None and len(records) >= options.max_songs
        if not capped:  # the schedule runs to its end even if its last step offered nothing
            delay = t0 + steps[-1].end_s - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        submit_s = loop.time() - t0
        pending = [task for task in tasks if not task.done()]
        if log is not None:
            log(
                f"submitted {len(records)} songs in {submit_s:.0f} s; waiting up to "
                f"{options.drain_s:g} s for {len(pending)} still going"
            )
        if pending:
            _, pending_set = await asyncio.wait(pending, timeout=options.drain_s)
            for task in pending_set:
                task.cancel()
            await asyncio.gather(*pending_set, return_exceptions=True)
        wall_s = loop.time() - t0
    return LoadRun(
        url=options.url,
        seed=options.seed,
        steps=steps,
        records=records,
        started_at=started_at,
        submit_s=submit_s,
        wall_s=wall_s,
        profile=options.profile.describe(),
    )


def _log_step(
    log: Callable[[str], None] | None,
    steps: list[Any],
    index: int,
    records: list[SongRecord],
    tasks: list[asyncio.Task[None]],
) -> None:
    if log is None:
        return
    step = steps[index]
    done = sum(r.result == "done" for r in records)
    in_flight = sum(not t.done() for t in tasks)
    log(
        f"step {index + 1}/{len(steps)}: {step.rate_per_s * 60:g} songs/min for "
        f"{step.duration_s:g} s  (so far: {len(tasks)} submitted, {in_flight} in flight, "
        f"{done} done)"
    )


async def _song(client: httpx.AsyncClient, record: SongRecord, t0: float) -> None:
    import httpx

    loop = asyncio.get_running_loop()
    posted = loop.time()
    record.submitted_at_s = posted - t0
    try:
        response = await client.post("/v1/songs", json=record.body)
    except httpx.HTTPError as error:
        record.result, record.reason = "refused", _transport_reason(error)
        record.ended_s = loop.time() - posted
        return
    record.http_status = response.status_code
    record.admission = admission_of(response.status_code)
    if response.status_code != 202:
        record.result, record.reason = "refused", _error_code(response)
        record.ended_s = loop.time() - posted
        return
    record.song_id = str(response.json()["id"])
    await _follow(client, record, posted)


async def _follow(client: httpx.AsyncClient, record: SongRecord, posted: float) -> None:
    """Read the song's events until `done` or `error`; resume a broken stream where it broke."""
    import httpx

    loop = asyncio.get_running_loop()
    last_id: str | None = None
    failures = 0
    while True:
        headers = {"Last-Event-ID": last_id} if last_id is not None else {}
        try:
            async with client.stream(
                "GET",
                f"/v1/songs/{record.song_id}/events",
                headers=headers,
                timeout=httpx.Timeout(client.timeout.connect, read=None),
            ) as stream:
                if stream.status_code >= 400:
                    await stream.aread()
                    record.result, record.reason = "failed", f"events: {_error_code(stream)}"
                    record.ended_s = loop.time() - posted
                    return
                event_type, data_lines = "message", list[str]()
                async for line in stream.aiter_lines():
                    if line.startswith("id:"):
                        last_id = line[3:].strip()
                    elif line.startswith("event:"):
                        event_type = line[6:].strip()
                    elif line.startswith("data:"):
                        data_lines.append(line[5:].lstrip())
                    elif line == "" and data_lines:
                        now = loop.time() - posted
                        record.events += 1
                        if event_type == "progress" and record.first_progress_s is None:
                            record.first_progress_s = now
                        elif event_type == "done":
                            record.result, record.done_s, record.ended_s = "done", now, now
                            return
                        elif event_type == "error":
                            data = _json("\n".join(data_lines))
                            record.result, record.ended_s = "failed", now
                            record.reason = str(data.get("code") or "error")
                            return
                        event_type, data_lines = "message", []
        except httpx.HTTPError as error:
            reason = _transport_reason(error)
        else:
            reason = "stream ended without done or error"
        failures += 1
        if failures > _STREAM_RETRIES:
            record.result, record.reason = "failed", f"events: {reason}"
            record.ended_s = loop.time() - posted
            return
        await asyncio.sleep(0.5 * failures)


def _json(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _error_code(response: httpx.Response) -> str:
    """The `error.code` of an API error body, else the status and the start of the body."""
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}: {response.text[:80]}"


def _transport_reason(error: Exception) -> str:
    return f"{type(error).__name__}: {error}"[:200]
