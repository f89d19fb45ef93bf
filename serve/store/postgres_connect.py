"""Reaching the job database: connection settings, error messages that name what is wrong and
never carry the password, schema migrations, and the start-up check.

Shared by `PostgresJobStore`, its LISTEN connection and `check_database` (fail-fast start-up).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any
from urllib.parse import quote

import psycopg
from psycopg.conninfo import conninfo_to_dict

from .postgres_migrations import MIGRATIONS
from .records import StoreUnavailable

logger = logging.getLogger(__name__)

MIGRATION_LOCK = 0x736F6E67736572  # pg_advisory_lock key of schema migrations ("songser")
# Dead peers are noticed by TCP keepalives rather than by a hung connection.
KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}

# The database's clock, in seconds: every time a Postgres store writes is this one, so replicas
# on machines whose clocks differ still agree on leases and order.
DB_NOW = "extract(epoch FROM clock_timestamp())::double precision"


def describe_target(conninfo: str) -> str:
    """`user@host:port/db` of a connection string: what messages may show (never the password)."""
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.Error:
        return "(an unparsable URL)"
    user = params.get("user") or "(default user)"
    host = params.get("host") or "(default host)"
    port = params.get("port") or "5432"
    dbname = params.get("dbname") or "(default database)"
    return f"{user}@{host}:{port}/{dbname}"


def _redact(text: str, conninfo: str) -> str:
    """`text` with the connection string's password blanked, however it is spelled."""
    try:
        password = conninfo_to_dict(conninfo).get("password")
    except psycopg.Error:
        return "(details withheld: the URL could not be parsed)"
    if password:
        for spelling in {str(password), quote(str(password), safe=""), quote(str(password))}:
            text = text.replace(spelling, "***")
    return text


def _first_line(error: BaseException, conninfo: str) -> str:
    lines = str(error).strip().splitlines()
    return _redact(lines[0], conninfo) if lines else "no details"


def unavailable_error(conninfo: str, error: BaseException) -> StoreUnavailable:
    return StoreUnavailable(
        f"the job database {describe_target(conninfo)} is unavailable "
        f"({type(error).__name__}: {_first_line(error, conninfo)})"
    )


def apply_migrations(conninfo: str, *, connect_timeout_s: int = 5) -> list[int]:
    """Bring the schema up to date: apply each missing migration in its own transaction, under
    an advisory lock so replicas starting together apply each version once. Returns the versions
    this call applied. Raises psycopg errors."""
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=connect_timeout_s) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                "version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL)"
            )
            applied = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
            done = []
            for version, script in MIGRATIONS:
                if version in applied:
                    continue
                with conn.transaction():
                    conn.execute(script.encode())  # several statements: no parameters
                    conn.execute(
                        "INSERT INTO schema_migrations (version, applied_at) "
                        "VALUES (%s, clock_timestamp())",
                        (version,),
                    )
                done.append(version)
            return done
        finally:
            if not conn.broken:
                conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))


def _why_unusable(conninfo: str, error: psycopg.Error) -> str:
    """What is wrong with a database URL, in words an operator can act on."""
    params: dict[str, Any] = {}
    with contextlib.suppress(psycopg.Error):
        params = conninfo_to_dict(conninfo)
    host = params.get("host") or "localhost"
    port = params.get("port") or "5432"
    user = params.get("user") or "(default user)"
    dbname = params.get("dbname") or user
    text = str(error).lower()
    if isinstance(error, psycopg.ProgrammingError) and not params:
        return "the URL is not a valid PostgreSQL connection string"
    if "resolve host" in text or "translate host name" in text or "name or service" in text:
        return f"unknown host {host!r} (the name does not resolve)"
    if "connection refused" in text:
        return f"connection refused at {host}:{port} (is PostgreSQL running and listening there?)"
    if "role" in text and "does not exist" in text:
        return f"authentication failed: there is no user {user!r} on {host}:{port}"
    if "password" in text or "authentication failed" in text:
        return f"authentication failed for user {user!r} (check the user and password)"
    if "database" in text and "does not exist" in text:
        return f"database {dbname!r} does not exist on {host}:{port} (create it, e.g. createdb)"
    if "timeout" in text or "timed out" in text:
        return f"timed out connecting to {host}:{port}"
    if isinstance(error, psycopg.errors.InsufficientPrivilege):
        return f"user {user!r} may not create the job store's tables in {dbname!r}"
    return f"{type(error).__name__}: {_first_line(error, conninfo)}"


def check_database(database_url: str, *, connect_timeout_s: int = 5) -> None:
    """Fail fast at start-up: connect to `database_url` and bring its schema up to date, or raise
    ValueError naming the setting and what is wrong (never the password)."""
    try:
        apply_migrations(database_url, connect_timeout_s=connect_timeout_s)
    except psycopg.Error as error:
        raise ValueError(
            "storage.database_url (env SONGSERVE_DATABASE_URL): cannot use the job database "
            f"{describe_target(database_url)}: {_why_unusable(database_url, error)}"
        ) from None
