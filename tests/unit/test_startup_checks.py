"""Start-up checks: local stores (SQLite, files) on a cluster are refused, since a replica on
another node would write where nothing reads (Postgres and S3 may run anywhere); required API
keys are asked for."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from serve.config import AppConfig, resolve_config
from serve.placement import NodeInfo, local_storage_conflicts

HEAD = NodeInfo("head0000aaaa", {"CPU": 8}, {"role": "head"})
WORKER = NodeInfo("work0000bbbb", {"CPU": 8, "GPU": 1}, {"pool": "cuda"})
SHARED = {
    "database_url": "postgresql://songserve@db:5432/songserve",
    "storage_url": "s3://songserve",
}


def config(storage: dict[str, Any] | None = None, **sections: Any) -> AppConfig:
    return AppConfig.model_validate({"storage": storage or {}, **sections})


def test_one_node_with_local_stores_is_fine() -> None:
    assert local_storage_conflicts(config()) is None
    assert local_storage_conflicts(config(), [HEAD]) is None


@pytest.mark.parametrize(
    ("sections", "named"),
    [
        ({"deployments": {"conductor": {"actor": {"label_selector": {"pool": "cuda"}}}}},
         "deployments.conductor"),
        ({"deployments": {"postprocess": {"actor": {"accelerator_type": "A100"}}}},
         "deployments.postprocess"),
        ({"models": {"pools": [{"name": "Gpu", "model": "sketch",
                                "deployment": {"actor": {"accelerator_type": "A100"}}}]}},
         "models.pools[Gpu].deployment"),
    ],
)  # fmt: skip
def test_a_store_touching_deployment_off_the_head_is_refused_with_the_fix(
    sections: dict[str, Any], named: str
) -> None:
    problem = local_storage_conflicts(config(**sections))
    assert problem is not None
    assert named in problem
    assert "storage.database_url" in problem and "storage.storage_url" in problem
    assert "SONGSERVE_DATABASE_URL" in problem and "songserve services up" in problem


def test_head_pins_and_store_free_deployments_are_not_conflicts() -> None:
    pinned = {"actor": {"label_selector": {"role": "head"}}}
    off_head = {"actor": {"accelerator_type": "A100"}}
    # The router and the tag normaliser touch no store: they may go anywhere.
    sections = {"deployments": {"conductor": pinned, "router": off_head, "tags": off_head}}
    assert local_storage_conflicts(config(**sections)) is None


def test_a_connected_cluster_of_several_nodes_needs_shared_stores() -> None:
    problem = local_storage_conflicts(config(), [HEAD, WORKER])
    assert problem is not None and "2 nodes" in problem
    dead = NodeInfo("gone0000cccc", {"CPU": 8}, {}, alive=False)
    assert local_storage_conflicts(config(), [HEAD, dead]) is None


def test_postgres_and_s3_run_anywhere() -> None:
    off_head = {"deployments": {"conductor": {"actor": {"label_selector": {"pool": "cuda"}}}}}
    assert local_storage_conflicts(config(SHARED, **off_head), [HEAD, WORKER]) is None
    # Only one of them shared is still a disk on one node: refused, naming the other.
    half = config({"database_url": SHARED["database_url"]}, **off_head)
    problem = local_storage_conflicts(half, [HEAD, WORKER])
    assert problem is not None and "storage.storage_url" in problem
    assert "storage.database_url keep" not in problem


def test_required_keys_are_asked_for_when_deploying(tmp_path: Path) -> None:
    import asyncio

    from serve.startup import check_startup
    from serve.store import open_job_store
    from serve.store.tenancy import ApiKeyRecord, hash_api_key, new_owner_id

    storage = {"data_dir": str(tmp_path)}
    needs_keys = resolve_config({"storage": storage, "auth": {"require_keys": True}})
    with pytest.raises(ValueError) as refused:
        check_startup(needs_keys, deploying=True)
    assert "songserve keys create" in str(refused.value)
    assert "SONGSERVE_API_KEYS" in str(refused.value)
    check_startup(needs_keys, deploying=False)  # an offline build serves nobody
    with_keys = resolve_config(
        {"storage": storage, "auth": {"require_keys": True, "api_keys": ["k1"]}}
    )
    check_startup(with_keys, deploying=True)

    async def add_managed_key() -> None:
        jobs = open_job_store(needs_keys.storage)
        record = ApiKeyRecord("web", new_owner_id(), hash_api_key("k"), "k", 0.0)
        await jobs.add_api_key(record)
        await jobs.close()

    asyncio.run(add_managed_key())
    check_startup(needs_keys, deploying=True)  # a managed key in the job store is a key
