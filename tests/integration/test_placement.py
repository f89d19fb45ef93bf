"""Pool pins from config/mixed.yaml hold on a simulated mixed cluster (head + Mac + A100 raylets).

The cluster runs in a subprocess (tests/integration/placement_cluster.py): it needs its own
multi-node Ray, and this session may already hold a single-node one from the `serve_url` fixture.
The subprocess also gets its own RAY_TMPDIR, so its cluster address file never redirects a later
`ray.init()` in this session.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from typing import Any

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.integration

SCRIPT = REPO / "tests" / "integration" / "placement_cluster.py"
# Cluster start ≈ 10 s, four apps ≈ 20 s, node removal and shutdown ≈ 15 s on 2 cores.
SCRIPT_TIMEOUT_S = 150


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    report_path = tmp_path_factory.mktemp("placement") / "report.json"
    # Short on purpose: Ray puts unix sockets under it, and socket paths are limited to ~107 bytes.
    with tempfile.TemporaryDirectory(prefix="rpl-", dir="/tmp") as ray_tmp:
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        env.update(RAY_TMPDIR=ray_tmp, RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=str(REPO))
        result = subprocess.run(
            [sys.executable, str(SCRIPT), str(report_path)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=SCRIPT_TIMEOUT_S,
            check=False,
        )
    assert result.returncode == 0, (
        f"placement_cluster.py exited {result.returncode}\n"
        f"--- stdout ---\n{result.stdout[-4000:]}\n--- stderr ---\n{result.stderr[-4000:]}"
    )
    loaded: dict[str, Any] = json.loads(report_path.read_text())
    return loaded


def test_replicas_run_only_on_the_nodes_their_pool_is_pinned_to(report: dict[str, Any]) -> None:
    nodes = report["nodes"]
    placed = report["replica_nodes"]
    assert report["app_status"]["DiT_CUDA"] == "RUNNING"
    assert report["app_status"]["DiT_MPS"] == "RUNNING"
    assert placed["DiT_CUDA"] == [nodes["a100"], nodes["a100"]]
    assert placed["DiT_MPS"] == [nodes["mac"]]
    assert placed["SongAPI"] == [nodes["head"], nodes["head"]]


def test_the_deployed_options_are_those_the_config_produces(report: dict[str, Any]) -> None:
    options = report["ray_actor_options"]
    assert options["DiT_CUDA"]["accelerator_type"] == "A100"
    assert options["DiT_CUDA"]["num_gpus"] == 1
    assert options["DiT_MPS"]["label_selector"] == {"pool": "mac"}
    assert options["DiT_MPS"]["num_gpus"] == 1
    assert options["SongAPI"]["label_selector"] == {"role": "head"}


def test_a_pool_no_node_can_host_is_named_while_serve_stays_silent(
    report: dict[str, Any],
) -> None:
    # Serve: stuck deploying, no error message — the gap unplaceable_pools fills.
    assert report["app_status"]["DiT_H100"] == "DEPLOYING"
    assert report["unplaceable_deployment"]["status"] == "UPDATING"
    assert "H100" not in report["unplaceable_deployment"]["message"]
    assert report["unplaceable"] == {
        "DiT_H100": "no node has accelerator_type H100 (nodes offer: A100, M2)"
    }
    assert "DiT_H100" not in report["replica_nodes"]


def test_a_pool_becomes_unplaceable_when_its_nodes_leave(report: dict[str, Any]) -> None:
    assert report["unplaceable_without_mac"] == {
        "DiT_MPS": "no node is labelled pool=mac (nodes labelled pool: cuda)"
    }
