"""Fault injection for integration tests, and the checks every job must pass afterwards.

- `sigkill_replica`: a real crash of one Serve replica process (SIGKILL: no `__del__`, no lease
  handed back). Unlike `ray.kill`, Ray is not told: Serve and the callers learn of it as they
  would of a crash on a cluster (a dead worker, failed calls, a failed health check).
- `ApiProbe`: a thread that keeps calling the API while a store is down and records every answer
  (status, Retry-After, transport errors), so a test can say what clients saw and when.
- `SseFollower`: a thread that follows one song's event stream the way a browser's EventSource
  does (reconnect with `Last-Event-ID` when the stream breaks) until the song ends.
- `read_outcomes` / `check_outcome`: every job as stored, with its event log, and the durability
  rules it must satisfy (terminal with a reason, exactly its variations, one terminal event each).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import httpx

from serve.config import StorageConfig
from serve.store import EventRecord, JobRecord, open_job_store, open_object_store

from .conftest import APP_NAME

TERMINAL = ("succeeded", "failed", "canceled")


# -- crashes ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kill:
    deployment: str
    replica: str  # the replica actor's name
    pid: int
    at_s: float  # seconds since the run began


def _own_pid(_: Any) -> int:
    return os.getpid()


def replica_pids(deployment: str, timeout_s: float = 2.0) -> dict[str, int]:
    """The worker pid of each live replica of `deployment` of the app, by actor name. Replicas
    that are dead or still starting (they do not answer within `timeout_s`) are left out."""
    import ray

    asked: dict[str, Any] = {}  # actor name → the ObjectRef of its pid
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if f"{APP_NAME}#{deployment}#" in actor["name"]:
            with contextlib.suppress(ValueError):  # gone since it was listed
                replica = ray.get_actor(actor["name"], namespace=actor["namespace"])
                asked[actor["name"]] = replica.__ray_call__.remote(_own_pid)
    if not asked:
        return {}
    ready, _ = ray.wait(list(asked.values()), num_returns=len(asked), timeout=timeout_s)
    pids: dict[str, int] = {}
    for name, reply in asked.items():
        if reply in ready:
            with contextlib.suppress(ray.exceptions.RayError):  # died
                pids[name] = cast(int, ray.get(reply))
    return pids


def sigkill_replica(deployment: str, rng: random.Random, started_at: float) -> Kill | None:
    """SIGKILL the process of one live replica of `deployment`, chosen with `rng`; None when no
    replica of it is up (Serve is still replacing an earlier one)."""
    pids = replica_pids(deployment)
    if not pids:
        return None
    name = rng.choice(sorted(pids))
    os.kill(pids[name], signal.SIGKILL)
    return Kill(deployment, name, pids[name], round(time.monotonic() - started_at, 2))


# -- what clients see ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    at: float  # time.monotonic() when the answer came
    call: str  # "GET song", "POST song", "GET healthz"
    status: int | None  # None: no HTTP answer at all (connection error, timeout)
    retry_after: str | None
    body: str
    latency_s: float


class ApiProbe(threading.Thread):
    """Makes one API call (`call`: "GET song", "POST song" or "GET healthz") over and over until
    stopped, recording every answer; songs it managed to create are in `created`. One probe per
    call, so each call is seen throughout an outage however long each answer takes."""

    def __init__(self, base_url: str, call: str, song_id: str, body: dict[str, Any]) -> None:
        super().__init__(name=f"probe {call}", daemon=True)
        self._client = httpx.Client(base_url=base_url, timeout=30)
        self.call = call
        self._request: tuple[str, str, dict[str, Any] | None] = {
            "GET song": ("GET", f"/v1/songs/{song_id}", None),
            "POST song": ("POST", "/v1/songs", body),
            "GET healthz": ("GET", "/healthz", None),
        }[call]
        self._stopping = threading.Event()
        self.answers: list[Answer] = []
        self.created: list[str] = []

    def run(self) -> None:
        try:
            while not self._stopping.is_set():
                self._call()
                self._stopping.wait(0.1)
        finally:
            self._client.close()

    def _call(self) -> None:
        method, url, body = self._request
        began = time.monotonic()
        try:
            response = self._client.request(method, url, json=body)
        except httpx.HTTPError as error:
            now = time.monotonic()
            self.answers.append(Answer(now, self.call, None, None, repr(error), now - began))
            return
        now = time.monotonic()
        if response.status_code == 202:
            self.created.append(response.json()["id"])
        self.answers.append(
            Answer(
                now,
                self.call,
                response.status_code,
                response.headers.get("retry-after"),
                response.text[:300],
                now - began,
            )
        )

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=60)


class SseFollower(threading.Thread):
    """Follows a song's SSE stream to its end, reconnecting with `Last-Event-ID` whenever the
    stream breaks or the API refuses it (as EventSource does). `events` holds (id, type) of every
    logged event received; `unlogged` the types of frames sent without an id (a queued song's
    `queue` place, which is not in the log); `reconnects` how many times it had to connect
    again."""

    def __init__(self, base_url: str, song_id: str, deadline_s: float) -> None:
        super().__init__(name=f"sse-{song_id}", daemon=True)
        self._base_url = base_url
        self._song_id = song_id
        self._deadline = time.monotonic() + deadline_s
        self.events: list[tuple[int, str]] = []
        self.unlogged: list[str] = []
        self.reconnects = 0
        self.refused: Counter[int] = Counter()  # status of refused (re)connections
        self.finished = False

    def run(self) -> None:
        with httpx.Client(base_url=self._base_url, timeout=30) as client:
            while time.monotonic() < self._deadline:
                if self._follow(client):
                    self.finished = True
                    return
                self.reconnects += 1
                time.sleep(0.5)

    def _follow(self, client: httpx.Client) -> bool:
        """One connection; True when the server ended the stream after a terminal event."""
        last = self.events[-1][0] if self.events else None
        headers = {"Last-Event-ID": str(last)} if last is not None else {}
        url = f"/v1/songs/{self._song_id}/events"
        seq: int | None = None
        kind = "message"
        try:
            with client.stream("GET", url, headers=headers) as response:
                if response.status_code != 200:
                    self.refused[response.status_code] += 1
                    return False
                for line in response.iter_lines():
                    if line == "":  # a frame ends: the next one names its own id and type
                        seq, kind = None, "message"
                    elif line.startswith("id:"):
                        seq = int(line[3:].strip())
                    elif line.startswith("event:"):
                        kind = line[6:].strip()
                    elif line.startswith("data:"):
                        json.loads(line[5:])  # every event's data is whole JSON
                        if seq is None:
                            self.unlogged.append(kind)
                        else:
                            self.events.append((seq, kind))
        except httpx.HTTPError:
            return False
        return bool(self.events) and self.events[-1][1] in ("done", "error")


def wait_until_terminal(
    client: httpx.Client, song_ids: Iterable[str], timeout_s: float
) -> dict[str, dict[str, Any]]:
    """Poll the API until every song is terminal (503s are waited out); the songs as last seen.
    Fails naming the songs that are still not done at the deadline."""
    pending = set(song_ids)
    seen: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout_s
    while pending:
        for song_id in sorted(pending):
            response = client.get(f"/v1/songs/{song_id}")
            if response.status_code == 503:
                continue
            assert response.status_code == 200, response.text
            seen[song_id] = response.json()
            if seen[song_id]["status"] in TERMINAL:
                pending.discard(song_id)
        if not pending:
            break
        assert time.monotonic() < deadline, {
            song_id: (seen.get(song_id, {}).get("status"), seen.get(song_id, {}).get("stage"))
            for song_id in pending
        }
        time.sleep(0.3)
    return seen


# -- what was stored -------------------------------------------------------------------------------


@dataclass
class Outcome:
    job: JobRecord
    events: list[EventRecord]
    missing_objects: list[str] = field(default_factory=list)


def read_outcomes(storage: StorageConfig, song_ids: Sequence[str]) -> dict[str, Outcome]:
    """Each job as stored, with its whole event log and the object keys its variations name
    that the object store does not have."""

    async def read() -> dict[str, Outcome]:
        store = open_job_store(storage)
        objects = open_object_store(storage)
        outcomes: dict[str, Outcome] = {}
        try:
            for song_id in song_ids:
                job = await store.get_job(song_id)
                assert job is not None, song_id
                events: list[EventRecord] = []
                while batch := await store.events_after(song_id, events[-1].seq if events else 0):
                    events.extend(batch)
                outcome = Outcome(job, events)
                for variation in job.variations:
                    for key in variation.objects.values():
                        if await objects.stat(key) is None:
                            outcome.missing_objects.append(key)
                outcomes[song_id] = outcome
        finally:
            await store.close()
        return outcomes

    return asyncio.run(read())


def check_outcome(outcome: Outcome, variations: int) -> None:
    """The durability rules for one finished job:

    - it is terminal: `succeeded`, or `failed` with an error whose code and message say why;
    - it has exactly the variations it asked for, every one succeeded when the song did, each
      with every object it names in the object store;
    - its event log is dense (1, 2, 3, …), ends with exactly one terminal song event (`done` or
      `error`), and holds exactly one `variation` event, status succeeded, per succeeded
      variation and none for any other (a variation's failure is told by the song's `error`).
    """
    job, events = outcome.job, outcome.events
    where = f"job {job.id} ({job.status}, attempts {job.attempts}, error {job.error})"
    assert job.status in ("succeeded", "failed"), where
    if job.status == "failed":
        assert job.error and job.error.get("code") and job.error.get("message"), where
    assert [v.index for v in job.variations] == list(range(variations)), where
    if job.status == "succeeded":
        assert all(v.status == "succeeded" for v in job.variations), where
    assert not outcome.missing_objects, (where, outcome.missing_objects)

    assert [e.seq for e in events] == list(range(1, len(events) + 1)), where
    kinds = Counter(e.type for e in events)
    terminal = "done" if job.status == "succeeded" else "error"
    assert kinds["done"] + kinds["error"] == 1 and events[-1].type == terminal, (where, kinds)
    terminal_events = Counter(e.data["index"] for e in events if e.type == "variation")
    for event in (e for e in events if e.type == "variation"):
        assert event.data["status"] == "succeeded", (where, event)
    succeeded = {v.index for v in job.variations if v.status == "succeeded"}
    assert dict(terminal_events) == dict.fromkeys(succeeded, 1), (where, terminal_events)


def redone_work(outcomes: Iterable[Outcome]) -> dict[str, int]:
    """What the event logs show was done more than once, a lower bound: renders and masterings
    started again, within one claim (the conductor's retries) and in all (claims after crashes
    included). A claim begins with a `stage: generating` event; a render begins where the
    variation's render steps start over; a mastering with its `postprocessing` step 0."""
    totals = Counter[str]()
    for outcome in outcomes:
        claims: list[Counter[tuple[str, int]]] = []
        last_step: dict[int, int] = {}
        for event in outcome.events:
            data = event.data
            if event.type == "stage" and data.get("stage") == "generating":
                claims.append(Counter())
                last_step = {}
            elif event.type == "progress" and claims:
                index, step = data["variation"], data["step"]
                if data["stage"] == "generating":
                    if index not in last_step or step <= last_step[index]:
                        claims[-1]["render", index] += 1
                    last_step[index] = step
                elif data["stage"] == "postprocessing" and step == 0:
                    claims[-1]["master", index] += 1
        variations = len(outcome.job.variations)
        for kind in ("render", "master"):
            started = [count for claim in claims for (k, _), count in claim.items() if k == kind]
            totals[f"{kind}s_started"] += sum(started)
            totals[f"{kind}s_redone_in_claim"] += sum(count - 1 for count in started)
        totals["variations"] += variations
    return {
        **totals,
        "renders_redone": totals["renders_started"] - totals["variations"],
        "masters_redone": totals["masters_started"] - totals["variations"],
    }
