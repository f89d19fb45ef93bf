"""Checks before the app starts: a config that cannot work stops start-up at once, naming the
setting and the fix, instead of replicas failing one by one (or `songserve up` waiting for a
health check that never passes).

Shared by the builder (`serve.app.build_app`, on the cluster) and `songserve up` (before it
starts Ray at all).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from .placement import local_storage_conflicts

if TYPE_CHECKING:
    from .config import AppConfig
    from .placement import NodeInfo


def startup_problems(
    config: AppConfig, nodes: Iterable[NodeInfo] | None = None, *, deploying: bool
) -> list[str]:
    """What makes a resolved config unfit to start on this cluster (`nodes`, when known). The
    keys a deployment needs are only asked for when `deploying` (a config built offline, to
    check it, serves nobody)."""
    problems = []
    conflict = local_storage_conflicts(config, nodes)
    if conflict:
        problems.append(conflict)
    return problems


def check_startup(
    config: AppConfig, nodes: Iterable[NodeInfo] | None = None, *, deploying: bool
) -> None:
    """Raise ValueError with every problem; when `deploying`, also reach both stores (and apply
    the job store's migrations), so an unusable URL or credential stops start-up here."""
    problems = startup_problems(config, nodes, deploying=deploying)
    if problems:
        raise ValueError("; ".join(problems))
    if deploying:
        from .store import check_stores

        check_stores(config.storage)
        if config.auth.require_keys and not config.auth.api_keys and not _managed_keys(config):
            raise ValueError(
                "auth.require_keys is set but there is no API key: create one with `songserve "
                "keys create --name NAME --config FILE`, or set SONGSERVE_API_KEYS "
                "(comma-separated) in the environment of the process that deploys the app"
            )


def _managed_keys(config: AppConfig) -> int:
    """Active keys in the job store (in a thread of its own: a caller may be in an event loop)."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from .store import open_job_store

    async def count() -> int:
        jobs = open_job_store(config.storage)
        try:
            return await jobs.count_api_keys()
        finally:
            await jobs.close()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, count()).result()
