"""One local Ray instance per test session; each test deploys the app on its own data dir."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from serve.config import StorageConfig
from serve.store import JobRecord, JobStore, StemsRecord, open_job_store
from tests.helpers import free_port, with_quick_stop

APP_NAME = "songserve"
REPLICATE_TOKEN_ENV = "SONGSERVE_TEST_REPLICATE_TOKEN"
REPLICATE_TOKEN = "r8_integration"
"""The token Replicate pools read in this session (test_replicate.py): set before Ray starts,
because replicas inherit the environment of the node that spawns them."""
METRICS_PORT = free_port()
"""Where the session's Ray exports Prometheus metrics (`metric_samples` reads them)."""


@pytest.fixture(scope="session")
def serve_url() -> Iterator[str]:
    import ray
    from ray import serve
    from ray.serve._private import client as serve_client

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault(REPLICATE_TOKEN_ENV, REPLICATE_TOKEN)
    # More logical CPUs than cores: the graph's coordination replicas use slivers, and tests may
    # run two decoder and two post-processor replicas side by side.
    ray.init(
        address="local",
        # Every Ray connection on loopback: tests send nothing to the machine's network address.
        _node_ip_address="127.0.0.1",
        num_cpus=4,
        include_dashboard=False,
        namespace="songserve-tests",
        _metrics_export_port=METRICS_PORT,
        # Replicas report metrics every 10 s by default; tests read them within seconds.
        _system_config={"metrics_report_interval_ms": 500},
    )
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    with pytest.MonkeyPatch.context() as patch:
        # serve.run and serve.delete ask for the app's status once a second: every delete took a
        # whole second (done in a fraction here) and every deploy half a second more than it
        # needed. Tests deploy and delete dozens of times; a tenth of a second is plenty.
        patch.setattr(serve_client, "CLIENT_POLLING_INTERVAL_S", 0.1)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            serve.shutdown()
            ray.shutdown()


def exported_samples(prefix: str = "ray_s") -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of every sample the session's Ray exports now whose name starts
    with `prefix` (default: Serve's and songserve's own).

    The export keeps every replica the session ever ran, so late in a run it is tens of
    thousands of lines; lines are picked by name before parsing, or each read takes seconds."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=10).text
    picked = "".join(f"{line}\n" for line in text.splitlines() if line.startswith(prefix))
    return [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(picked)
        for sample in family.samples
    ]


def metric_samples(name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
    """Every sample of Prometheus metric `name` (e.g. `ray_serve_actual_batch_size_bucket`)
    the session's Ray exports now, whose labels include `labels`."""
    return [
        (tags, value)
        for sample_name, tags, value in exported_samples(prefix=name)
        if sample_name == name and labels.items() <= tags.items()
    ]


@dataclass(frozen=True)
class FreshMetrics:
    """Metric samples of the replicas started after this snapshot was taken.

    Earlier tests' replicas stay in the node's export with their last values until Ray drops a
    dead worker's series, minutes later and at any moment: a sum over every replica can then fall
    while a test waits for it to rise (a stale conductor's retries vanishing hides a new one).
    Leaving out every replica exported when the snapshot was taken makes before/after deltas
    exact. Samples without a `replica` label (Ray's own) are kept."""

    earlier_replicas: frozenset[str]

    @classmethod
    def snapshot(cls) -> FreshMetrics:
        return cls(
            frozenset(tags["replica"] for _, tags, _ in exported_samples() if "replica" in tags)
        )

    def samples(self, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
        return [
            (tags, value)
            for tags, value in metric_samples(name, **labels)
            if tags.get("replica") not in self.earlier_replicas
        ]

    def total(self, name: str, **labels: str) -> float:
        """The sum of the fresh samples of `name` with these labels (0 when none)."""
        return sum(value for _, value in self.samples(name, **labels))

    def read(self, prefix: str = "ray_s") -> MetricsReading:
        """Every fresh sample of the series whose names start with `prefix` (default: Serve's
        and songserve's), read once: late in a run one read of the export takes seconds, so
        checks of many series share one (and a narrower prefix parses less of it)."""
        return MetricsReading(
            [
                (name, tags, value)
                for name, tags, value in exported_samples(prefix)
                if tags.get("replica") not in self.earlier_replicas
            ]
        )


@dataclass(frozen=True)
class MetricsReading:
    """One read of the export (see FreshMetrics.read)."""

    exported: list[tuple[str, dict[str, str], float]]

    def total(self, name: str, **labels: str) -> float:
        return sum(
            value
            for sample, tags, value in self.exported
            if sample == name and labels.items() <= tags.items()
        )


def test_args(data_dir: Path, **overrides: Any) -> dict[str, Any]:
    """App args for tests: the embedded default with short leases and a private data dir;
    every deployment and pool stops at once (QUICK_STOP) unless the test says otherwise."""
    args: dict[str, Any] = {
        "storage": {"data_dir": str(data_dir)},
        # Every deploy starts new tag replicas: the semantic engine's model load (seconds of CPU
        # each) would cost minutes over the tier. It has its own tests (unit, e2e).
        "tags": {"engine": "lexical"},
        "jobs": {"lease_s": 3.0, "heartbeat_s": 0.5, "poll_interval_s": 0.2},
        "models": {
            "pools": [
                {
                    "name": "Sketch",
                    "model": "sketch",
                    "deployment": {
                        "num_replicas": 2,
                        "max_ongoing_requests": 1,
                        "actor": {"num_cpus": 0.5},
                    },
                }
            ],
        },
        "deployments": {
            "postprocess": {
                "num_replicas": 2,
                "max_ongoing_requests": 1,
                "actor": {"num_cpus": 0.25},
            },
        },
    }
    for section, values in overrides.items():
        if isinstance(values, dict) and isinstance(args.get(section), dict):
            args[section] = {**args[section], **values}
        else:
            args[section] = values
    return with_quick_stop(args)


@dataclass
class Deployed:
    client: httpx.Client
    data_dir: Path
    storage: StorageConfig  # resolved: where this deployment's jobs and bytes are

    def _read(self, read: Callable[[JobStore], Any]) -> Any:
        async def run() -> Any:
            store = open_job_store(self.storage)
            try:
                return await read(store)
            finally:
                await store.close()

        return asyncio.run(run())

    def job(self, song_id: str) -> JobRecord:
        """The job as stored (render diagnostics included), read straight from the job store."""
        job = self._read(lambda store: store.get_job(song_id))
        assert job is not None
        return job

    def stems(self, song_id: str, index: int) -> StemsRecord:
        """A variation's stems job as stored (attempts and lease included)."""
        record = self._read(lambda store: store.get_stems(song_id, index))
        assert record is not None
        return record


def kill_replicas(deployment: str) -> int:
    """Kill every replica actor of a deployment of the app, as a crash would (no clean-up)."""
    import ray

    killed = 0
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if f"{APP_NAME}#{deployment}#" in actor["name"]:
            ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]), no_restart=True)
            killed += 1
    return killed


@contextlib.contextmanager
def _deployer(serve_url: str, data_dir: Path) -> Iterator[Callable[..., Deployed]]:
    """`deploy(**overrides)` runs the app on `data_dir`; again, it redeploys. The app is deleted
    on exit.

    The first deploy deletes whatever app still runs under the name first, so each deployer
    starts on an empty Serve: a module's shared app (`module_deploy`) is gone once one of the
    module's tests deploys its own (such tests come after the ones sharing it)."""
    from ray import serve

    from serve.app import build_app
    from serve.config import AppConfig, resolve_config

    clients: list[httpx.Client] = []

    def run(**overrides: Any) -> Deployed:
        config = AppConfig.model_validate(test_args(data_dir, **overrides))
        if not clients:
            serve.delete(APP_NAME)  # nothing to do unless a module's shared app still runs
        serve.run(build_app(config), name=APP_NAME, route_prefix="/")
        storage = resolve_config(config).storage
        client = httpx.Client(base_url=serve_url, timeout=60)
        clients.append(client)
        deadline = time.monotonic() + 60
        while client.get("/healthz").status_code != 200:
            assert time.monotonic() < deadline, "the app never became healthy"
            time.sleep(0.2)
        return Deployed(client, data_dir, storage)

    try:
        yield run
    finally:
        for client in clients:
            client.close()
        serve.delete(APP_NAME)


@pytest.fixture
def deploy(serve_url: str, tmp_path: Path) -> Iterator[Callable[..., Deployed]]:
    """`deploy(**overrides)` runs the app on this test's data dir; again, it redeploys."""
    with _deployer(serve_url, tmp_path / "state") as run:
        yield run


@pytest.fixture(scope="module")
def module_deploy(
    serve_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Deployed]]:
    """`deploy` for an app every test of a module shares (one start of a slow-loading model)."""
    with _deployer(serve_url, tmp_path_factory.mktemp("module") / "state") as run:
        yield run


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """An empty directory nothing can write to, even root: a read-only bind mount of itself
    (tests run as root, which ignores permission bits)."""
    import subprocess

    path = tmp_path / "read-only"
    path.mkdir()
    mounted = (
        subprocess.run(["mount", "--bind", str(path), str(path)], capture_output=True).returncode
        == 0
    )
    if mounted:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], check=True)
    else:  # no mount privilege: a directory under /proc, where nothing can be created
        path = Path("/proc/self/songserve-read-only")
    try:
        yield path
    finally:
        if mounted:
            subprocess.run(["umount", str(path)], check=False)


def cluster_storage(
    postgres_url: str, s3_url: str, endpoint_url: str, data_dir: Path, certs: Path
) -> dict[str, Any]:
    """App overrides for Postgres and S3, with `data_dir` (nothing may need it) and the signing
    chain in `certs` (read by the builder only)."""
    return {
        "storage": {
            "data_dir": str(data_dir),
            "database_url": postgres_url,
            "storage_url": s3_url,
            "s3_endpoint_url": endpoint_url,
        },
        "postprocess": {
            "c2pa": {
                "cert_path": str(certs / "chain.pem"),
                "key_path": str(certs / "signer.key"),
            }
        },
    }
