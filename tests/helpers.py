"""Shared test helpers: free ports, SSE reading, song polling, audio decoding."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import yaml

from serve.local_services import LocalPostgres

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# Replicas of a deleted, redeployed or stopped test app stop at once. Serve stops a graph one
# layer at a time (ingress, conductor, …, decoders), and each stopping replica looks whether its
# requests have finished every `graceful_shutdown_wait_loop_s`: 2 s by default, which is also the
# least an idle one takes, so every stop of a server waited ~9 s.
QUICK_STOP: dict[str, Any] = {"graceful_shutdown_wait_loop_s": 0.1}
# Serve notices a killed replica at its next health check (every 10 s by default) and only then
# starts another: for the deployments a test kills.
QUICK_RESTART: dict[str, Any] = {"health_check_period_s": 1.0, "health_check_timeout_s": 5.0}


def with_quick_stop(args: dict[str, Any]) -> dict[str, Any]:
    """A copy of app `args` with QUICK_STOP under every fixed deployment and every decoder pool;
    what a role or pool sets itself wins. Sections that are not mappings (a test of the
    validation) are left as they are."""
    from serve.config import DeploymentsConfig

    args = dict(args)
    deployments = args.get("deployments", {})
    if isinstance(deployments, dict):
        args["deployments"] = {**deployments}
        for role in DeploymentsConfig.model_fields:
            options = deployments.get(role, {})
            if isinstance(options, dict):
                args["deployments"][role] = {**QUICK_STOP, **options}
    models = args.get("models")
    pools = models.get("pools") if isinstance(models, dict) else None
    if isinstance(models, dict) and isinstance(pools, list):
        args["models"] = {
            **models,
            "pools": [
                {**pool, "deployment": {**QUICK_STOP, **pool.get("deployment", {})}}
                if isinstance(pool, dict)
                else pool
                for pool in pools
            ],
        }
    return args


def local_config_on_free_port(work_dir: Path) -> tuple[Path, int]:
    """config/local.yaml rewritten to a free loopback port and a data dir under `work_dir`, with
    replicas that stop as soon as they are idle (QUICK_STOP). Nothing else of the config
    changes."""
    config = yaml.safe_load((REPO / "config" / "local.yaml").read_text())
    port = free_port()
    config["http_options"]["port"] = port
    args = config["applications"][0]["args"]
    args["storage"]["data_dir"] = str(work_dir / "var")
    config["applications"][0]["args"] = with_quick_stop(args)
    path = work_dir / "local.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, port


def read_events(
    client: httpx.Client,
    song_id: str,
    timeout_s: float = 120.0,
    last_event_id: int | None = None,
    *,
    queue: bool = False,
) -> list[tuple[int, str, dict[str, Any]]]:
    """Every (id, event, data) of a song's SSE stream until the server closes it. `queue`
    frames (a queued song's place; not in the log, so no id of their own) only when asked."""
    headers = {"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {}
    events: list[tuple[int, str, dict[str, Any]]] = []
    seq, event_type, data = 0, "message", ""
    with client.stream(
        "GET", f"/v1/songs/{song_id}/events", headers=headers, timeout=timeout_s
    ) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("id:"):
                seq = int(line[3:].strip())
            elif line.startswith("event:"):
                event_type = line[6:].strip()
            elif line.startswith("data:"):
                data = line[5:].strip()
            elif line == "" and data:
                if queue or event_type != "queue":
                    events.append((seq, event_type, json.loads(data)))
                data = ""
    return events


def wait_for_song(client: httpx.Client, song_id: str, timeout_s: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        song = client.get(f"/v1/songs/{song_id}").json()
        if song["status"] in ("succeeded", "failed", "canceled"):
            return song
        time.sleep(0.2)
    raise AssertionError(f"song {song_id} did not finish in {timeout_s} s: {song}")


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[LocalPostgres]:
    """A started PostgreSQL in a temp dir (fsync off: test data need not survive a crash),
    stopped and removed afterwards. Tests that stop and start a server use one of their own."""
    # Not under pytest's tmp_path: its base directory is private to root (0700), and when we run
    # as root the server runs as the `postgres` user, who must reach its directory.
    root = Path(tempfile.mkdtemp(prefix="songserve-pg-"))
    root.chmod(0o755)
    server = LocalPostgres(root, fsync=False)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
