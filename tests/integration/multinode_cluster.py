"""Runs the real songserve app (sketch pools) on Postgres and S3 across a simulated three-node
cluster, then loses a worker node while songs are in flight; reports where replicas ran and what
became of every job.

Run by tests/integration/test_multinode.py in a subprocess, so it gets a fresh Ray driver even
when the test session already has one:

    python tests/integration/multinode_cluster.py REPORT.json --database-url postgresql://… \
        --storage-url s3://BUCKET --s3-endpoint-url http://… --data-dir READ_ONLY_DIR --certs DIR

S3 credentials come from the AWS_* environment (the builder reads them and carries them to every
replica). `--data-dir` should be a directory nothing can write to: no stage may need a disk.

The cluster (`ray.cluster_utils.Cluster`, several raylets on this machine):
  head      2 CPUs, label role=head: Serve's controller, the one HTTP proxy, the SongAPI ingress
  worker-a  4 CPUs, label pool=cpu-a
  worker-b  4 CPUs, label pool=cpu-b
Only the ingress is pinned (to role=head). Every other deployment selects `role: "!head"`: any
node but the head whose resources fit — no worker is named, so Serve may put (and re-put) them on
either. Two conductor and two decoder replicas spread over the workers, so losing one worker
loses replicas of both.

Phases:
  baseline  10 songs on the whole cluster, until all are finished.
  failover  10 more songs; once a few have finished, the worker whose conductor holds the most
            unfinished jobs is killed (raylet and replicas, no clean-up, as a crash or a lost
            machine). Two more songs are posted right after. Every song must end.
The report (JSON) holds the node ids by name, each deployment's replicas (node, pid, replica id)
before and after the loss, the timings, and every job as stored (status, attempts, where each
variation rendered, whose lease it was under when the node went) with the node of each of its
claims (read from the conductors' logs; diagnostics).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.helpers import QUICK_STOP  # noqa: E402
from tests.integration.conftest import (  # noqa: E402
    APP_NAME,
    Deployed,
    cluster_storage,
    test_args,
)
from tests.integration.placement_cluster import OBJECT_STORE_BYTES  # noqa: E402

OFF_HEAD = {"role": "!head"}
"""What every deployment but the ingress selects: any node that is not the head."""
HEAD = {"role": "head"}
SONGS_PER_PHASE = 10
SONGS_DURING_RECOVERY = 2
VARIATIONS = 2
DURATION_S = 5
# The node goes once this many of the failover songs have finished: the rest are in flight.
FINISHED_BEFORE_REMOVAL = 3
# The whole run stops waiting after this, so the cluster is still shut down cleanly before the
# test's own timeout kills this process (which would leave its raylets behind).
RUN_BUDGET_S = 480.0
APP_READY_TIMEOUT_S = 150.0
PHASE_TIMEOUT_S = 180.0
TERMINAL = ("succeeded", "failed", "canceled")


_STARTED = time.monotonic()


def log(message: str) -> None:
    print(f"[{time.monotonic() - _STARTED:6.1f} s] {message}", file=sys.stderr, flush=True)


def app_args(args: argparse.Namespace) -> dict[str, Any]:
    """The app's args: the test defaults on Postgres+S3 with short leases, the ingress on the
    head, two conductors and every other deployment off it."""
    from serve.config import DecoderPoolConfig, DeploymentOptions, DeploymentsConfig

    def placed(
        defaults: DeploymentOptions, selector: dict[str, str], replicas: int | None = None
    ) -> dict[str, Any]:
        # From the role's own defaults: a section given in part would start from the generic
        # DeploymentOptions defaults instead (e.g. 8 ongoing requests on the ingress, not 256).
        section = defaults.model_dump()
        return section | {
            "num_replicas": replicas or defaults.num_replicas,
            # Short: replicas stop fast at the end; nothing here scales down mid-run. (Serve stops
            # the graph a layer at a time, each replica looking every wait loop: 2 s by default.)
            "graceful_shutdown_timeout_s": 1.0,
            **QUICK_STOP,
            # Serve learns of a replica lost with its node through its health check.
            "health_check_period_s": 2.0,
            "actor": section["actor"] | {"label_selector": selector},
        }

    roles = DeploymentsConfig()
    sketch = DecoderPoolConfig(name="Sketch", model="sketch")
    storage = cluster_storage(
        args.database_url, args.storage_url, args.s3_endpoint_url, args.data_dir, args.certs
    )
    return test_args(
        args.data_dir,
        **storage,
        # Short leases: the lost conductor's jobs are taken over within seconds. More claims than
        # the default 3: on a starved 2-core machine a heartbeat can come later than the lease,
        # and the lapse costs a claim (fenced: the late conductor stops); the loss adds one.
        jobs={"lease_s": 3.0, "heartbeat_s": 0.5, "poll_interval_s": 0.2, "max_attempts": 5},
        models={
            "pools": [
                sketch.model_dump(exclude={"deployment"})
                | {"deployment": placed(sketch.deployment, OFF_HEAD)}
            ]
        },
        deployments={
            "api": placed(roles.api, HEAD),
            "conductor": placed(roles.conductor, OFF_HEAD, replicas=2),
            **{
                name: placed(getattr(roles, name), OFF_HEAD)
                for name in DeploymentsConfig.model_fields
                if name not in ("api", "conductor", "separator")
            },
        },
    )


def song_body(n: int) -> dict[str, Any]:
    """Song n: lyrics mode or description mode (which adds the lyrics stage), alternately."""
    common = {"duration_s": DURATION_S, "variations": VARIATIONS, "seed": n}
    if n % 2:
        return {"prompt": f"a song about node {n} coming back", "style": "synth pop", **common}
    lyrics = f"[verse]\nnode {n} went away\n[chorus]\nthe jobs stayed"
    return {"lyrics": lyrics, "style": "indie rock", **common}


def _where(replica: Any) -> tuple[str, int]:
    import os

    import ray

    return ray.get_runtime_context().get_node_id(), os.getpid()


def replica_nodes() -> dict[str, list[dict[str, Any]]]:
    """Deployment → its live replicas' node id, pid and replica id, asked of each replica."""
    import ray

    placed: dict[str, list[dict[str, Any]]] = {}
    for entry in ray.util.list_named_actors(all_namespaces=True):
        name = entry["name"]
        if f"{APP_NAME}#" not in name:
            continue
        deployment = name.split("#")[1]
        try:
            actor = ray.get_actor(name, namespace=entry["namespace"])
            node_id, pid = ray.get(actor.__ray_call__.remote(_where), timeout=30)
        except (ValueError, ray.exceptions.RayError):  # a replica gone since the listing
            continue
        replica = name.split("#")[2]
        placed.setdefault(deployment, []).append(
            {"node_id": node_id, "pid": pid, "replica": replica}
        )
    for replicas in placed.values():
        replicas.sort(key=lambda r: (r["node_id"], r["pid"]))
    return placed


def _wait(condition: Callable[[], bool], timeout_s: float, what: Callable[[], str]) -> None:
    """Wait for `condition`, at most `timeout_s` and never past the run's budget."""
    deadline = min(time.monotonic() + timeout_s, _STARTED + RUN_BUDGET_S)
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"timed out waiting for {what()} ({timeout_s:.0f} s allowed, run budget "
                f"{RUN_BUDGET_S:.0f} s)"
            )
        time.sleep(0.25)


_CLAIM_LINE = re.compile(
    r"songserve_Conductor (?P<replica>\w+) .*-- claimed (?P<job>song_\w+) \(attempt (?P<n>\d+)\)"
)


def claims_by_replica(session_dir: Path) -> dict[str, list[tuple[int, str]]]:
    """Job id → (attempt, conductor replica id) of every claim, from the conductors' logs
    (all nodes of this cluster log under one session dir, the lost one's included)."""
    claims: dict[str, list[tuple[int, str]]] = {}
    for log_file in sorted((session_dir / "logs" / "serve").glob("replica_*_Conductor_*.log")):
        for match in _CLAIM_LINE.finditer(log_file.read_text(errors="replace")):
            claims.setdefault(match["job"], []).append((int(match["n"]), match["replica"]))
    return {job: sorted(found) for job, found in claims.items()}


def _pid(worker: str | None) -> int | None:
    """The pid in a conductor's lease owner (`conductor@HOST:PID:TOKEN`) or a render's replica
    (`Pool@HOST:PID`)."""
    if not worker:
        return None
    parts = worker.rsplit("@", 1)[-1].split(":")
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


class Songs:
    """Posts songs through the proxy and follows them through the API."""

    def __init__(self, app: Deployed) -> None:
        self.app = app
        # Song id → its phase, when it was accepted and when the API first showed it finished.
        self.accepted: dict[str, dict[str, Any]] = {}

    def post(self, n: int, phase: str) -> str:
        response = self.app.client.post("/v1/songs", json=song_body(n))
        assert response.status_code == 202, (response.status_code, response.text)
        song_id = str(response.json()["id"])
        self.accepted[song_id] = {"phase": phase, "accepted_at": time.monotonic()}
        return song_id

    def refresh(self, ids: list[str]) -> None:
        for song_id in ids:
            song = self.accepted[song_id]
            if "finished_at" in song:
                continue
            status = self.app.client.get(f"/v1/songs/{song_id}").json()["status"]
            if status in TERMINAL:
                song["finished_at"] = time.monotonic()

    def unfinished(self, ids: list[str]) -> list[str]:
        return [i for i in ids if "finished_at" not in self.accepted[i]]

    def wait_all(
        self, ids: list[str], timeout_s: float, tick: Callable[[], None] = lambda: None
    ) -> None:
        def done() -> bool:
            self.refresh(ids)
            tick()
            return not self.unfinished(ids)

        _wait(done, timeout_s, lambda: f"songs {self.unfinished(ids)} to finish")


def run(args: argparse.Namespace) -> None:
    import httpx
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    from serve.app import build_app
    from serve.config import AppConfig, resolve_config
    from tests.helpers import free_port

    started = time.monotonic()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 2,
            "labels": HEAD,
            "object_store_memory": OBJECT_STORE_BYTES,
            "include_dashboard": False,
        },
    )
    report: dict[str, Any] = {}
    client: httpx.Client | None = None
    try:
        workers = {
            name: cluster.add_node(
                num_cpus=4, labels={"pool": pool}, object_store_memory=OBJECT_STORE_BYTES
            )
            for name, pool in (("worker-a", "cpu-a"), ("worker-b", "cpu-b"))
        }
        ray.init(address=cluster.address, namespace="multinode", log_to_driver=False)
        assert cluster.head_node is not None
        nodes = {"head": cluster.head_node.node_id} | {n: w.node_id for n, w in workers.items()}
        node_name = {node_id: name for name, node_id in nodes.items()}
        report["nodes"] = nodes
        report["cluster_start_s"] = round(time.monotonic() - started, 1)
        log(f"cluster up: {nodes}")

        port = free_port()
        serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
        config = AppConfig.model_validate(app_args(args))
        report["actor_options"] = {
            name: options.actor.to_ray() for name, options in config.deployments
        } | {pool.name: pool.deployment.actor.to_ray() for pool in config.models.pools}
        deploy_started = time.monotonic()
        serve._run(build_app(config), _blocking=False, name=APP_NAME, route_prefix="/")

        def app_status() -> str:
            app = serve.status().applications.get(APP_NAME)
            return app.status.value if app else "absent"

        _wait(lambda: app_status() == "RUNNING", APP_READY_TIMEOUT_S,
              lambda: f"the app to be RUNNING (status {app_status()})")  # fmt: skip
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        app = Deployed(client, Path(args.data_dir), resolve_config(config).storage)
        report["deploy_s"] = round(time.monotonic() - deploy_started, 1)
        log(f"app running in {report['deploy_s']} s")

        before = replica_nodes()
        report["replicas_before"] = before
        pid_node = {r["pid"]: r["node_id"] for rs in before.values() for r in rs}

        def node_of(worker: str | None) -> str | None:
            """The node name of a lease owner or render replica, by the pid in it."""
            pid = _pid(worker)
            return node_name.get(pid_node[pid]) if pid in pid_node else None

        # Baseline: the whole cluster, a read-only data dir.
        songs = Songs(app)
        t0 = time.monotonic()
        baseline = [songs.post(n, "baseline") for n in range(SONGS_PER_PHASE)]
        songs.wait_all(baseline, PHASE_TIMEOUT_S)
        report["baseline"] = {"songs": len(baseline), "all_done_s": round(time.monotonic() - t0, 1)}
        log(f"baseline: {report['baseline']}")

        # Failover: a worker goes while songs are in flight.
        t0 = time.monotonic()
        failover = [songs.post(n, "failover") for n in range(SONGS_PER_PHASE, 2 * SONGS_PER_PHASE)]
        _wait(
            lambda: (
                (songs.refresh(failover) or True)
                and len(failover) - len(songs.unfinished(failover)) >= FINISHED_BEFORE_REMOVAL
            ),
            PHASE_TIMEOUT_S,
            lambda: f"{FINISHED_BEFORE_REMOVAL} failover songs to finish",
        )
        in_flight = songs.unfinished(failover)
        held_by: dict[str, str | None] = {}
        for song_id in in_flight:
            held_by[song_id] = node_of(app.job(song_id).lease_owner)
        # The worker whose conductor drives the most of them: a lost node that loses jobs.
        victim = max(workers, key=lambda name: (list(held_by.values()).count(name), name))
        survivor = next(name for name in workers if name != victim)
        log(f"removing {victim}; in flight {len(in_flight)}, leases by node {held_by}")
        removed_at = time.monotonic()
        cluster.remove_node(workers[victim], allow_graceful=False)
        removal_s = time.monotonic() - removed_at
        during = [
            songs.post(n, "during_recovery")
            for n in range(2 * SONGS_PER_PHASE, 2 * SONGS_PER_PHASE + SONGS_DURING_RECOVERY)
        ]
        log(f"{victim} removed in {removal_s:.1f} s; posted {len(during)} more")

        serve_seen: dict[str, float] = {}

        def watch_serve() -> None:
            """When Serve noticed the lost replicas, and when it had them all back."""
            deployments = serve.status().applications[APP_NAME].deployments
            healthy = all(
                d.status.value == "HEALTHY"
                and d.replica_states.get("RUNNING", 0) == len(before[name])
                for name, d in deployments.items()
            )
            now = time.monotonic() - removed_at
            if not healthy and "noticed_s" not in serve_seen:
                serve_seen["noticed_s"] = now
            elif healthy and "noticed_s" in serve_seen and "recovered_s" not in serve_seen:
                serve_seen["recovered_s"] = now

        everything = [*failover, *during]
        songs.wait_all(everything, PHASE_TIMEOUT_S, tick=watch_serve)
        all_done_s = time.monotonic() - removed_at
        _wait(lambda: (watch_serve() or True) and "recovered_s" in serve_seen, 60.0,
              lambda: f"Serve to restore every replica (seen {serve_seen})")  # fmt: skip
        log(f"all done {all_done_s:.1f} s after the removal; Serve {serve_seen}")

        after = replica_nodes()
        pid_node |= {r["pid"]: r["node_id"] for rs in after.values() for r in rs}
        replica_node = {
            r["replica"]: node_name[r["node_id"]]
            for rs in (*before.values(), *after.values())
            for r in rs
        }
        claims = claims_by_replica(Path(cluster.head_node.get_session_dir_path()))
        report["replicas_after"] = after
        report["failover"] = {
            "songs": len(failover),
            "songs_during_recovery": len(during),
            "removed_node": victim,
            "surviving_node": survivor,
            "in_flight_at_removal": len(in_flight),
            "in_flight_leased_on_removed_node": list(held_by.values()).count(victim),
            "node_removal_s": round(removal_s, 2),
            "serve_noticed_s": round(serve_seen["noticed_s"], 1),
            "serve_replicas_back_s": round(serve_seen["recovered_s"], 1),
            "in_flight_done_s": round(
                max(songs.accepted[i]["finished_at"] for i in in_flight) - removed_at, 1
            ),
            "all_done_s": round(all_done_s, 1),
            "phase_s": round(time.monotonic() - t0, 1),
        }

        jobs = []
        for song_id, song in songs.accepted.items():
            job = app.job(song_id)
            jobs.append(
                {
                    "id": song_id,
                    "phase": song["phase"],
                    "status": job.status,
                    "error": job.error,
                    "attempts": job.attempts,
                    "variations_requested": job.request["variations"],
                    "variations": [
                        {
                            "index": v.index,
                            "status": v.status,
                            "replica": v.render.get("replica"),
                            "node": node_of(v.render.get("replica")) or "unknown",
                        }
                        for v in job.variations
                    ],
                    "lease_at_removal": held_by.get(song_id),
                    # Diagnostics: the node of each claim's conductor, in attempt order.
                    "claimed_on": [
                        replica_node.get(replica, "unknown")
                        for _, replica in claims.get(song_id, [])
                    ],
                    "seconds": round(song["finished_at"] - song["accepted_at"], 1),
                }
            )
        report["jobs"] = jobs
        report["total_s"] = round(time.monotonic() - started, 1)
        args.report.write_text(json.dumps(report, indent=2))
    finally:
        if client is not None:
            client.close()
        try:
            if ray.is_initialized():  # else serve.shutdown() would start connecting anew
                serve.shutdown()
                ray.shutdown()
        finally:
            cluster.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--storage-url", required=True)
    parser.add_argument("--s3-endpoint-url", required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--certs", type=Path, required=True)
    run(parser.parse_args())


if __name__ == "__main__":
    main()
