"""The throwaway local services: PostgreSQL survives a stop and start on its port, and `songserve
services up` / `down` start usable stores and leave no process behind."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from serve.local_services import LocalPostgres, process_alive
from serve.store.s3 import S3ObjectStore


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory the `postgres` user can reach too (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="songserve-services-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_postgres_keeps_its_data_and_port_across_stop_and_start(shared_dir: Path) -> None:
    server = LocalPostgres(shared_dir / "pg", fsync=False)
    server.start()
    try:
        url, first_pid = server.create_database("kept"), server.pid
        with psycopg.connect(url, autocommit=True) as connection:
            connection.execute("CREATE TABLE songs (id text PRIMARY KEY)")
            connection.execute("INSERT INTO songs VALUES ('song_1')")
        port = server.port

        server.stop()
        assert not server.is_running() and server.pid is None
        assert first_pid is not None and not process_alive(first_pid)
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(url, connect_timeout=2).close()

        server.start()
        assert server.port == port and server.is_running()
        with psycopg.connect(url) as connection:
            assert connection.execute("SELECT id FROM songs").fetchall() == [("song_1",)]
    finally:
        server.stop()


def test_postgres_url_is_a_fresh_database_per_test(postgres_url: str) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        name = connection.execute("SELECT current_database()").fetchone()
        tables = connection.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
    assert name is not None and name[0] == postgres_url.rsplit("/", 1)[1]
    assert tables == (0,)


def _songserve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "serve.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_services_up_prints_a_usable_environment_and_down_stops_everything(
    shared_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    up = _songserve("services", "up", "--dir", str(shared_dir))
    state_path = shared_dir / "services.json"
    try:
        assert up.returncode == 0, up.stderr
        env = {}
        for line in up.stdout.splitlines():  # `export K=V`, quoted for eval
            export, assignment = shlex.split(line)
            assert export == "export"
            key, _, value = assignment.partition("=")
            env[key] = value
        assert env["SONGSERVE_STORAGE_URL"] == "s3://songserve"
        assert env["AWS_REGION"] == "us-east-1"
        state = json.loads(state_path.read_text())
        pids = [state["postgres"]["pid"], state["seaweedfs"]["pid"]]
        assert all(process_alive(pid) for pid in pids)  # they outlived the CLI

        with psycopg.connect(env["SONGSERVE_DATABASE_URL"], autocommit=True) as connection:
            assert connection.execute("SELECT current_database()").fetchone() == ("songserve",)

        import boto3
        from botocore.config import Config

        s3 = boto3.client(
            "s3",
            endpoint_url=env["SONGSERVE_S3_ENDPOINT_URL"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env["AWS_REGION"],
            config=Config(s3={"addressing_style": "path"}),
        )
        s3.put_object(Bucket="songserve", Key="hello.txt", Body=b"hi")
        assert s3.get_object(Bucket="songserve", Key="hello.txt")["Body"].read() == b"hi"
        for key, value in env.items():  # what `eval "$(songserve services up)"` does
            monkeypatch.setenv(key, value)
        S3ObjectStore.from_url(env["SONGSERVE_STORAGE_URL"]).check()
    finally:
        down = _songserve("services", "down", "--dir", str(shared_dir))
    assert down.returncode == 0, down.stderr
    assert "PostgreSQL" in down.stderr and "SeaweedFS" in down.stderr
    assert not any(process_alive(pid) for pid in pids)
    again = _songserve("services", "down", "--dir", str(shared_dir))
    assert again.returncode == 0 and "nothing" in again.stderr
