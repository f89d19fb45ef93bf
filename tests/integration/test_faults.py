"""Faults on real servers, with Postgres and S3: replica processes crash (SIGKILL) while songs
render, and the database goes away for seconds while songs are in flight.

What must hold (DESIGN.md, "Durability principles"): a job accepted with 202 is never lost and
never stays running; it ends `succeeded`, or `failed` with a reason. No variation is delivered
twice (one terminal event each), no stored object is torn, and while the database is down the API
says 503 + Retry-After, never 500. Each test prints its figures as one `FAULT-FIGURES {json}`
line (docs/benchmarks.md): run with `-s` to see them.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from serve.local_services import LocalPostgres, LocalSeaweedFS
from serve.webhooks import verify
from tests.helpers import throwaway_postgres
from tests.webhook_receiver import Delivery, Receiver, running_receiver

from .conftest import Deployed, cluster_storage
from .faults import (
    ApiProbe,
    Kill,
    Outcome,
    SseFollower,
    check_outcome,
    read_outcomes,
    redone_work,
    sigkill_replica,
    wait_until_terminal,
)
from .test_cluster_stores import assert_checksums_match

pytestmark = pytest.mark.integration

DeployFn = Callable[..., Deployed]

# Short leases and quick retries, so a crash costs seconds: a dead conductor's lease expires in
# 3 s, and decoder/post-processor failures are retried within the claim with backoff.
JOBS = {
    "lease_s": 3.0,
    "heartbeat_s": 0.5,
    "poll_interval_s": 0.2,
    "max_attempts": 5,
    "retry_backoff_s": 0.2,
    "retry_backoff_max_s": 2.0,
}
SEED = 20261
WEBHOOK_SECRET = "a webhook signing secret for the fault tests"
# Serve notices a crashed replica at its next health check (every 10 s by default) and only then
# starts another; checking every second keeps the run short. Two conductors: a crashed one's
# jobs are taken over by the other once their leases expire, as on a real cluster.
HEALTH_CHECK = {"health_check_period_s": 1.0, "health_check_timeout_s": 5.0}
REPLICAS = {
    "models": {
        "pools": [
            {
                "name": "Sketch",
                "model": "sketch",
                "deployment": {
                    "num_replicas": 2,
                    "max_ongoing_requests": 1,
                    "actor": {"num_cpus": 0.5},
                    **HEALTH_CHECK,
                },
            }
        ],
    },
    "deployments": {
        "conductor": {"num_replicas": 2, "max_ongoing_requests": 64, **HEALTH_CHECK},
        "postprocess": {
            "num_replicas": 2,
            "max_ongoing_requests": 1,
            "actor": {"num_cpus": 0.25},
            **HEALTH_CHECK,
        },
    },
}


def _song(index: int, callback_url: str | None = None) -> dict[str, Any]:
    """Song `index` of a run: a 5 s sketch with 1 or 2 variations and a fixed seed."""
    return {
        **({"callback_url": callback_url} if callback_url else {}),
        "lyrics": f"[verse]\nsong number {index} keeps going\n[chorus]\nla la la",
        "style": "synth pop",
        "duration_s": 5,
        "variations": 1 + index % 2,
        "seed": 1000 + index,
        "model": "sketch",
    }


def _figures(name: str, **figures: Any) -> None:
    print(f"FAULT-FIGURES {json.dumps({'test': name, **figures}, separators=(',', ':'))}")


def _attempt_figures(outcomes: dict[str, Outcome]) -> dict[str, Any]:
    attempts = [outcome.job.attempts for outcome in outcomes.values()]
    return {
        "jobs": len(attempts),
        "succeeded": sum(o.job.status == "succeeded" for o in outcomes.values()),
        "failed": sum(o.job.status == "failed" for o in outcomes.values()),
        "failures": sorted({json.dumps(o.job.error) for o in outcomes.values() if o.job.error}),
        "attempts_total": sum(attempts),
        "attempts_max": max(attempts),
        "jobs_claimed_more_than_once": sum(a > 1 for a in attempts),
        **redone_work(outcomes.values()),
    }


# -- replica crashes -------------------------------------------------------------------------------


def _webhook_answer(delivery: Delivery, earlier: int) -> int:
    """A receiver that refuses the first delivery of about a third of the songs (a retry)."""
    first_refused = int(hashlib.sha256(delivery.headers["webhook-id"].encode()).hexdigest(), 16)
    return 500 if earlier == 0 and first_refused % 3 == 0 else 204


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver(_webhook_answer) as running:
        yield running


def test_songs_survive_replicas_crashing(
    postgres_url: str,
    s3_url: str,
    seaweedfs: LocalSeaweedFS,
    deploy: DeployFn,
    tmp_path: Path,
    receiver: Receiver,
) -> None:
    secret_file = tmp_path / "webhook-secret"
    secret_file.write_text(WEBHOOK_SECRET)
    app = deploy(
        **cluster_storage(postgres_url, s3_url, seaweedfs.endpoint_url, tmp_path, tmp_path),
        **REPLICAS,
        jobs=JOBS,
        webhooks={
            "allowed_hosts": ["127.0.0.1"],
            "allow_private_addresses": True,
            "allow_http": True,
            "signing_secret_file": str(secret_file),
            "backoff_s": 0.2,
            "backoff_max_s": 1.0,
            "lease_s": 4.0,
            "timeout_s": 2.0,
            "poll_interval_s": 0.2,
        },
    )
    rng = random.Random(SEED)
    bodies = [_song(index, receiver.url) for index in range(20)]
    started = time.monotonic()
    song_ids = []
    for body in bodies:
        accepted = app.client.post("/v1/songs", json=body)
        assert accepted.status_code == 202, accepted.text
        song_ids.append(accepted.json()["id"])

    # Crash replicas at random moments while songs are in flight: decoders and post-processors
    # mid-request, conductors with every job they drive. A conductor crash costs each of its jobs
    # a claim (of jobs.max_attempts = 5), so there are at most three of them.
    planned = rng.randint(6, 10)
    kills: list[Kill] = []
    unfinished = len(song_ids)
    while len(kills) < planned and unfinished:
        time.sleep(rng.uniform(1.0, 3.0))
        conductor_kills = sum(kill.deployment == "Conductor" for kill in kills)
        targets = ["Sketch", "PostProcessor"] + (["Conductor"] if conductor_kills < 3 else [])
        kill = sigkill_replica(rng.choice(targets), rng, started)
        if kill is not None:
            kills.append(kill)
        songs = app.client.get("/v1/songs", params={"limit": 100}).json()["songs"]
        unfinished = sum(song["status"] not in ("succeeded", "failed") for song in songs)
    last_kill_s = time.monotonic() - started
    assert len(kills) >= 6, f"the songs finished before enough crashes: {kills}"

    wait_until_terminal(app.client, song_ids, timeout_s=150)
    all_terminal_s = time.monotonic() - started
    outcomes = read_outcomes(app.storage, song_ids)
    for song_id, body in zip(song_ids, bodies, strict=True):
        check_outcome(outcomes[song_id], body["variations"])
    checked = assert_checksums_match(seaweedfs, s3_url)
    figures = _attempt_figures(outcomes)
    _figures(
        "replica_kills",
        **figures,
        kills=[
            {"deployment": kill.deployment, "at_s": kill.at_s, "pid": kill.pid} for kill in kills
        ],
        kills_by_deployment=dict(Counter(kill.deployment for kill in kills)),
        attempts_per_job=[outcome.job.attempts for outcome in outcomes.values()],
        last_kill_s=round(last_kill_s, 1),
        all_terminal_s=round(all_terminal_s, 1),
        objects_checked=checked,
    )
    # Serve restarts crashed replicas and the conductor retries: crashes do not fail songs.
    assert figures["failed"] == 0, figures["failures"]

    # Every song's webhook was delivered, conductor kills or not: at least once, signed, the
    # same webhook-id on every attempt, a 500 retried.
    deadline = time.monotonic() + 60
    pending = set(song_ids)
    while pending:
        assert time.monotonic() < deadline, f"webhooks never delivered: {sorted(pending)}"
        pending = {s for s in pending if _webhook_status(app, s) != "delivered"}
        time.sleep(0.5)
    by_id = receiver.by_id()
    delivered = {ds[-1].payload["data"]["id"]: ds for ds in by_id.values()}
    assert sorted(delivered) == sorted(song_ids)  # one webhook-id per song
    for deliveries in by_id.values():
        for delivery in deliveries:
            verify(WEBHOOK_SECRET, delivery.headers, delivery.body)
            assert delivery.payload["type"] == "song.succeeded"
    retried = sum(_webhook_answer(ds[0], 0) == 500 for ds in by_id.values())
    assert retried and all(
        len(ds) >= 2 for ds in by_id.values() if _webhook_answer(ds[0], 0) == 500
    )
    _figures(
        "webhooks_under_replica_kills",
        songs=len(song_ids),
        deliveries=sum(len(ds) for ds in by_id.values()),
        refused_first=retried,
        delivered_more_than_needed=sum(
            len(ds) - (2 if _webhook_answer(ds[0], 0) == 500 else 1) for ds in by_id.values()
        ),
    )


def _webhook_status(app: Deployed, song_id: str) -> str | None:
    webhook = app.client.get(f"/v1/songs/{song_id}").json().get("webhook")
    return None if webhook is None else webhook["status"]


# -- a database outage -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[LocalPostgres]:
    """A PostgreSQL of this module's own, which the outage test stops and starts (the session's
    server serves other tests meanwhile)."""
    with throwaway_postgres() as server:
        yield server


OUTAGE_S = 6.0  # longer than the API's wait for a database connection (5 s): calls get 503
CALLS = ("GET song", "POST song", "GET healthz")


def test_songs_survive_a_database_outage(
    private_postgres: LocalPostgres,
    s3_url: str,
    seaweedfs: LocalSeaweedFS,
    deploy: DeployFn,
    tmp_path: Path,
) -> None:
    database_url = private_postgres.create_database("outage")
    app = deploy(
        **cluster_storage(database_url, s3_url, seaweedfs.endpoint_url, tmp_path, tmp_path),
        **REPLICAS,
        jobs=JOBS,
        # An idle event stream reads the song's status every second: the outage reaches it.
        api={"sse_keepalive_s": 1.0},
    )
    base_url = str(app.client.base_url)
    bodies = [_song(100 + index) for index in range(8)]
    song_ids = [app.client.post("/v1/songs", json=body).json()["id"] for body in bodies]
    follower = SseFollower(base_url, song_ids[-1], deadline_s=180)
    follower.start()
    # Wait until songs are rendering, so the outage cuts through work in flight.
    deadline = time.monotonic() + 60
    while app.job(song_ids[0]).stage not in ("generating", "done"):
        assert time.monotonic() < deadline, app.job(song_ids[0])
        time.sleep(0.1)
    probes = [ApiProbe(base_url, call, song_ids[0], _song(999)) for call in CALLS]
    for probe in probes:
        probe.start()
    time.sleep(0.5)  # answers from before the outage

    stopping = time.monotonic()
    private_postgres.stop()
    stopped = time.monotonic()
    time.sleep(OUTAGE_S)
    private_postgres.start()  # the same data on the same port
    restarted = time.monotonic()
    in_flight = sum(not app.job(song_id).is_terminal for song_id in song_ids)

    # Keep probing until every call has been answered with success again after the restart.
    deadline = time.monotonic() + 60
    while not all(
        any(a.at > restarted and a.status in (200, 202) for a in probe.answers) for probe in probes
    ):
        assert time.monotonic() < deadline, [probe.answers[-2:] for probe in probes]
        time.sleep(0.2)
    for probe in probes:
        probe.stop()
    answers = [answer for probe in probes for answer in probe.answers]
    recovered = {
        probe.call: round(
            min(a.at for a in probe.answers if a.at > restarted and a.status in (200, 202))
            - restarted,
            2,
        )
        for probe in probes
    }
    created = [song_id for probe in probes for song_id in probe.created]

    all_ids = song_ids + created
    all_bodies = bodies + [_song(999)] * len(created)
    wait_until_terminal(app.client, all_ids, timeout_s=120)
    all_terminal_s = time.monotonic() - restarted
    follower.join(timeout=60)

    # Calls answered while the database was going down or down. Each waits up to 5 s for a
    # connection, so a probe makes only one or two calls in the outage.
    during = [a for a in answers if stopping <= a.at <= restarted]
    unavailable = [a for a in answers if a.status == 503]
    outcomes = read_outcomes(app.storage, all_ids)
    _figures(
        "database_outage",
        outage_s=round(restarted - stopped, 1),
        stop_s=round(stopped - stopping, 1),
        songs_in_flight_at_restart=in_flight,
        answers=dict(sorted(Counter(f"{a.call} {a.status}" for a in answers).items())),
        answers_in_outage=dict(sorted(Counter(f"{a.call} {a.status}" for a in during).items())),
        answer_503_latency_s=[
            round(min(a.latency_s for a in unavailable), 2),
            round(max(a.latency_s for a in unavailable), 2),
        ]
        if unavailable
        else None,
        first_success_after_restart_s=recovered,
        all_terminal_after_restart_s=round(all_terminal_s, 1),
        sse_reconnects=follower.reconnects,
        sse_refused=dict(follower.refused),
        songs_created_by_probe=len(created),
        **_attempt_figures(outcomes),
    )

    # What clients saw: 503 + Retry-After while the database was down; never another 5xx, never
    # a call left without an HTTP answer.
    assert not [a for a in answers if a.status is None], "calls got no HTTP answer"
    assert not [a for a in answers if a.status in range(500, 600) and a.status != 503], Counter(
        f"{a.call} {a.status}" for a in answers
    )
    for call in ("GET song", "POST song"):
        assert any(a.call == call and a.status == 503 for a in during), f"{call}: no 503"
    for answer in (a for a in answers if a.status == 503):
        assert answer.retry_after and answer.retry_after.isdigit(), answer
        assert json.loads(answer.body)["error"]["code"] in ("store_unavailable", "unavailable")

    for song_id, body in zip(all_ids, all_bodies, strict=True):
        check_outcome(outcomes[song_id], body["variations"])
    assert_checksums_match(seaweedfs, s3_url)

    # A follower of the event stream got the whole log, in order, across the outage.
    assert follower.finished, (follower.events[-3:], follower.refused)
    assert follower.events == [(e.seq, e.type) for e in outcomes[song_ids[-1]].events]
