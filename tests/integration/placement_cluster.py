"""Deploys config/mixed.yaml's pool pins on a simulated mixed cluster; reports where replicas ran.

Run by tests/integration/test_placement.py in a subprocess, so it gets a fresh Ray driver even when
the test session already has one: `python tests/integration/placement_cluster.py REPORT.json`.

The cluster (`ray.cluster_utils.Cluster`, several raylets on this machine) mirrors a real one:
  head  — CPU only, label role=head (as `ray start --head --labels=role=head`)
  mac   — GPU: 1, accelerator_type:M2, label pool=mac (what Ray 2.60 advertises on Apple Silicon)
  a100  — GPU: 2, accelerator_type:A100, label pool=cuda
Each pool of config/mixed.yaml is deployed as a trivial class with exactly the `ray_actor_options`
that `ActorOptions.to_ray()` gives it (the real decoder needs weights), plus the head-pinned ingress
options and a pool asking for H100s, which no node has. Each replica writes its node id to a file.

The report (JSON) holds the node ids by role, each deployment's replica nodes, Serve's status of
every app, and `unplaceable_pools` for the live cluster before and after the Mac leaves.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.helpers import QUICK_STOP  # noqa: E402

# Small object stores: the machine running the suite has little memory to spare per raylet.
OBJECT_STORE_BYTES = 80 * 1024 * 1024
UNPLACEABLE_POOL = "DiT_H100"
HEAD_PINNED = "SongAPI"
READY_TIMEOUT_S = 60.0
# How long the H100 app is watched after the others are up: long enough to see it is stuck.
STUCK_WATCH_S = 3.0
NODE_DEATH_TIMEOUT_S = 30.0
# At the end Serve stops every replica, the one on the departed Mac and the H100 one that never
# started included: with Serve's defaults (20 s grace, a look every 2 s) serve.shutdown() waited
# 20 s for them. The stand-ins hold no requests; what is checked happens before.
SHORT_SHUTDOWN = {**QUICK_STOP, "graceful_shutdown_timeout_s": 1.0}


class NodeReporter:
    """A stand-in replica: records which node it was placed on."""

    def __init__(self, deployment: str, report_dir: str) -> None:
        import ray

        node_id = ray.get_runtime_context().get_node_id()
        record = {"deployment": deployment, "node_id": node_id}
        Path(report_dir, f"{deployment}-{os.getpid()}.json").write_text(json.dumps(record))
        self._node_id = node_id

    def __call__(self) -> str:
        return self._node_id


def _wait(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.25)


def run(report_path: Path) -> None:
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    from serve.config import app_args_from_serve_config, load_serve_config, resolve_config
    from serve.placement import cluster_nodes, unplaceable_pools

    config = resolve_config(
        app_args_from_serve_config(load_serve_config(REPO / "config" / "mixed.yaml"))
    )
    pools = {pool.name: pool for pool in config.models.pools}
    cuda = pools["DiT_CUDA"]
    # DiT_CUDA re-pinned to H100s, which this cluster lacks.
    h100_actor = cuda.deployment.actor.model_copy(update={"accelerator_type": "H100"})
    h100 = cuda.model_copy(
        update={
            "name": UNPLACEABLE_POOL,
            "deployment": cuda.deployment.model_copy(update={"actor": h100_actor}),
        }
    )
    # Logical CPUs sized for the exact actor options below (4 CPUs per DiT_CUDA replica, 2 for
    # DiT_MPS); they are counters, not cores.
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 2,
            "labels": {"role": "head"},
            "object_store_memory": OBJECT_STORE_BYTES,
            "include_dashboard": False,
        },
    )
    try:
        mac = cluster.add_node(
            num_cpus=2,
            num_gpus=1,
            resources={"accelerator_type:M2": 1},
            labels={"pool": "mac"},
            object_store_memory=OBJECT_STORE_BYTES,
        )
        a100 = cluster.add_node(
            num_cpus=8,
            num_gpus=2,
            resources={"accelerator_type:A100": 1},
            labels={"pool": "cuda"},
            object_store_memory=OBJECT_STORE_BYTES,
        )
        ray.init(address=cluster.address, namespace="placement", log_to_driver=False)
        assert cluster.head_node is not None
        report: dict[str, Any] = {
            "nodes": {
                "head": cluster.head_node.node_id,
                "mac": mac.node_id,
                "a100": a100.node_id,
            }
        }
        serve.start(proxy_location="Disabled")
        replica_dir = report_path.parent / "replicas"
        replica_dir.mkdir(parents=True, exist_ok=True)

        deployments = {
            "DiT_CUDA": (pools["DiT_CUDA"].deployment.actor.to_ray(), 2),
            "DiT_MPS": (pools["DiT_MPS"].deployment.actor.to_ray(), 1),
            HEAD_PINNED: (config.deployments.api.actor.to_ray(), 2),
            UNPLACEABLE_POOL: (h100.deployment.actor.to_ray(), 1),
        }
        report["ray_actor_options"] = {name: options for name, (options, _) in deployments.items()}
        for name, (actor_options, replica_count) in deployments.items():
            reporter = serve.deployment(
                name=name,
                num_replicas=replica_count,
                ray_actor_options=actor_options,
                **SHORT_SHUTDOWN,
            )(NodeReporter)
            app = reporter.bind(name, str(replica_dir))
            # Not `serve.run`: it waits for RUNNING, which the H100 app never reaches.
            serve._run(app, _blocking=False, name=name, route_prefix=None)

        def app_statuses() -> dict[str, str]:
            return {name: app.status.value for name, app in serve.status().applications.items()}

        placeable = [name for name in deployments if name != UNPLACEABLE_POOL]
        _wait(
            lambda: all(app_statuses().get(name) == "RUNNING" for name in placeable),
            READY_TIMEOUT_S,
            f"apps {placeable} to be RUNNING (statuses: {app_statuses()})",
        )
        time.sleep(STUCK_WATCH_S)
        status = serve.status().applications
        report["app_status"] = {name: app.status.value for name, app in status.items()}
        stuck = status[UNPLACEABLE_POOL].deployments[UNPLACEABLE_POOL]
        report["unplaceable_deployment"] = {"status": stuck.status.value, "message": stuck.message}

        replicas: dict[str, list[str]] = {}
        for record_path in sorted(replica_dir.glob("*.json")):
            record = json.loads(record_path.read_text())
            replicas.setdefault(record["deployment"], []).append(record["node_id"])
        report["replica_nodes"] = replicas

        configured = [*config.models.pools, h100]
        report["unplaceable"] = unplaceable_pools(configured, cluster_nodes())

        # The Mac leaves: its pool becomes unplaceable, and the check says why.
        cluster.remove_node(mac)
        _wait(
            lambda: not any(n.alive for n in cluster_nodes() if n.node_id == mac.node_id),
            NODE_DEATH_TIMEOUT_S,
            "the Mac node to be reported dead",
        )
        report["unplaceable_without_mac"] = unplaceable_pools(config.models.pools, cluster_nodes())
        report_path.write_text(json.dumps(report, indent=2))
    finally:
        serve.shutdown()
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: placement_cluster.py REPORT.json")
    run(Path(sys.argv[1]))
