"""`songserve up` (what `make run` runs) starts the graph, says how to call it, stops cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers import REPO, local_config_on_free_port

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_up_serves_and_stops_on_a_signal(tmp_path: Path, stop_signal: signal.Signals) -> None:
    config_path, port = local_config_on_free_port(tmp_path)
    log_path = tmp_path / "up.log"
    env = {
        **os.environ,
        "RAY_ADDRESS": "local",
        "RAY_USAGE_STATS_ENABLED": "0",
        # Start-up and signals, not the tag model: test_serve_run serves the default engine.
        "SONGSERVE_TAGS__ENGINE": "lexical",
    }

    def ignore_sigint() -> None:
        # As under nohup or a non-interactive shell's `&`: SIGINT starts out ignored.
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    with log_path.open("wb") as log:
        up = subprocess.Popen(
            [str(Path(sys.executable).with_name("songserve")), "up", "--config", str(config_path)],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=ignore_sigint,
        )
    try:
        deadline = time.monotonic() + 240
        while "songserve is up" not in log_path.read_text(errors="replace"):
            assert up.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "songserve up never reported ready"
            time.sleep(0.5)
        text = log_path.read_text()
        assert f"http://127.0.0.1:{port}" in text and "generate" in text and "curl" in text
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").json() == {"status": "ok"}

        up.send_signal(stop_signal)
        assert up.wait(timeout=120) == 0, log_path.read_text()[-3000:]
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()
