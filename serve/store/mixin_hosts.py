"""What the store backends' mixins (tenancy, webhooks) use of the store they are mixed into: the
SQLite store's one connection and thread, the Postgres store's pooled cursors. Declared for the
type checker only; the host store class defines them."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg


class SQLiteHost:
    if TYPE_CHECKING:

        @property
        def _db(self) -> sqlite3.Connection: ...

        async def _run(self, fn: Any, *args: Any) -> Any: ...

        def _transaction(self, fn: Any, *args: Any) -> Any: ...


class PostgresHost:
    if TYPE_CHECKING:

        def _cursor(
            self, *, transaction: bool = False
        ) -> contextlib.AbstractAsyncContextManager[psycopg.AsyncCursor[dict[str, Any]]]: ...

        async def _execute(
            self, cur: psycopg.AsyncCursor[dict[str, Any]], query: str, params: Sequence[Any] = ()
        ) -> None: ...

        async def _one(
            self, cur: psycopg.AsyncCursor[dict[str, Any]], query: str, params: Sequence[Any] = ()
        ) -> dict[str, Any] | None: ...

        async def _all(
            self, cur: psycopg.AsyncCursor[dict[str, Any]], query: str, params: Sequence[Any] = ()
        ) -> list[dict[str, Any]]: ...
