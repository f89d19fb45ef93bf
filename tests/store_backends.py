"""Job-store backends for contract tests: `Backend` opens store instances ("replicas") on one
database and runs a scenario with them; the `backend` fixture gives SQLite and Postgres."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from serve.store import JobStore

Scenario = Callable[[JobStore], Awaitable[None]]


class Backend:
    """Opens store instances on one database and runs a scenario with them in one event loop
    (stores bind to the loop they first run in), closing every instance at the end."""

    def __init__(self, name: str, factory: Callable[[], JobStore]) -> None:
        self.name = name
        self._factory = factory
        self._open: list[JobStore] = []

    def new_store(self) -> JobStore:
        """Another instance on the same database: another replica."""
        store = self._factory()
        self._open.append(store)
        return store

    def run(self, scenario: Scenario) -> None:
        async def main() -> None:
            try:
                await scenario(self.new_store())
            finally:
                for store in self._open:
                    await store.close()
                self._open.clear()

        asyncio.run(main())


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        from serve.store.sqlite import SQLiteJobStore

        return Backend("sqlite", lambda: SQLiteJobStore(tmp_path / "jobs.db"))
    from serve.store.postgres import PostgresJobStore

    url: str = request.getfixturevalue("postgres_url")
    return Backend("postgres", lambda: PostgresJobStore(url, connect_timeout_s=2, timeout_s=5))
