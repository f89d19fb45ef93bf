"""Fixtures of the e2e tier: `serve run` of the embedded default in a subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.helpers import REPO, local_config_on_free_port


@dataclass(frozen=True)
class LocalServer:
    """A running `serve run` of config/local.yaml: its base URL and the config file it serves
    (which `songserve keys --config` takes to reach the same job store)."""

    base_url: str
    config_path: Path
    log_path: Path


def _default_sigint() -> None:
    """In the child before exec: SIGINT handled by default. A test run started in the
    background (`make test &`, nohup, CI) has SIGINT ignored, and a child inherits that: `serve
    run` would then never see the SIGINT that stops it, and every teardown would wait out the
    90 s below before SIGKILL."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(scope="session")
def local_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """config/local.yaml on a free loopback port with its own data dir, once per session (every
    e2e module talks to the same server; a test that changes how it answers — a managed key —
    undoes that before it ends); stopped with SIGINT (SIGKILL to its own process group if it
    does not stop)."""
    work = tmp_path_factory.mktemp("e2e-server")
    config_path, port = local_config_on_free_port(work)
    log_path = work / "serve.log"
    env = {**os.environ, "RAY_ADDRESS": "local", "RAY_USAGE_STATS_ENABLED": "0"}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(Path(sys.executable).with_name("serve")), "run", str(config_path)],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_default_sigint,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            assert process.poll() is None, log_path.read_text()[-5000:]
            assert time.monotonic() < deadline, "serve run never became healthy"
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        yield LocalServer(base, config_path, log_path)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
