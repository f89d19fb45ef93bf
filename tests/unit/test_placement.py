"""Placement checks against synthetic clusters: each pool kind fits only the nodes meant for it,
and a pool nothing can host gets a reason that names what is missing and what the nodes offer."""

from __future__ import annotations

from typing import Any

import pytest

from serve.config import (
    ActorOptions,
    AppConfig,
    DecoderPoolConfig,
    app_args_from_serve_config,
    load_serve_config,
    resolve_config,
)
from serve.placement import (
    NodeInfo,
    local_storage_conflicts,
    matching_nodes,
    unplaceable_pools,
    unplaceable_reason,
)
from tests.helpers import REPO

GIB = 1024**3

HEAD = NodeInfo(
    "head0000aaaa",
    {"CPU": 8, "memory": 32 * GIB, "node:__internal_head__": 1},
    {"role": "head"},
)
A100 = NodeInfo(
    "a1000000bbbb",
    {"CPU": 32, "GPU": 8, "memory": 512 * GIB, "accelerator_type:A100": 1},
    {"pool": "cuda", "ray.io/accelerator-type": "A100"},
)
H100 = NodeInfo(
    "h1000000cccc",
    {"CPU": 32, "GPU": 1, "memory": 256 * GIB, "accelerator_type:H100": 1},
    {"ray.io/accelerator-type": "H100"},
)
# Apple Silicon in Ray 2.60: one "GPU" and the chip as accelerator type.
MAC = NodeInfo(
    "mac00000dddd",
    {"CPU": 12, "GPU": 1, "memory": 48 * GIB, "accelerator_type:M2": 1},
    {"pool": "mac"},
)
CPU_ONLY = NodeInfo("cpu00000eeee", {"CPU": 16, "memory": 64 * GIB}, {})
CLUSTER = [HEAD, A100, H100, MAC, CPU_ONLY]


def pool(name: str, model: str = "sketch", **actor: Any) -> DecoderPoolConfig:
    ace_step = {"path": "/models/acestep"} if model == "ace-step" else None
    return DecoderPoolConfig.model_validate(
        {"name": name, "model": model, "ace_step": ace_step, "deployment": {"actor": actor}}
    )


def ids(nodes: list[NodeInfo]) -> list[str]:
    return [node.node_id for node in nodes]


@pytest.mark.parametrize(
    ("actor", "expected"),
    [
        ({"num_gpus": 1, "accelerator_type": "A100"}, [A100]),
        ({"num_gpus": 1, "accelerator_type": "H100"}, [H100]),
        ({"num_gpus": 1, "label_selector": {"pool": "mac"}}, [MAC]),
        ({"num_gpus": 1, "accelerator_type": "M2"}, [MAC]),
        # The trap from the field notes: num_gpus alone lands on a Mac as readily as on an A100.
        ({"num_gpus": 1}, [A100, H100, MAC]),
        ({"num_cpus": 2}, CLUSTER),
        ({"num_cpus": 0.1, "label_selector": {"role": "head"}}, [HEAD]),
        ({"num_cpus": 1, "label_selector": {"pool": "!mac"}}, [HEAD, A100, H100, CPU_ONLY]),
        ({"num_gpus": 1, "label_selector": {"pool": "in(cuda, mac)"}}, [A100, MAC]),
        ({"num_gpus": 1, "label_selector": {"pool": "!in(cuda,mac)"}}, [H100]),
        ({"num_gpus": 4}, [A100]),
        ({"num_cpus": 1, "memory_bytes": 100 * GIB}, [A100, H100]),
    ],
    ids=lambda value: str(value) if isinstance(value, dict) else "",
)
def test_each_pool_kind_matches_only_its_nodes(
    actor: dict[str, Any], expected: list[NodeInfo]
) -> None:
    assert ids(matching_nodes(ActorOptions.model_validate(actor), CLUSTER)) == ids(expected)


def test_pools_that_fit_are_not_reported() -> None:
    pools = [
        pool("DiT_CUDA", "ace-step", num_gpus=1, accelerator_type="A100"),
        pool("DiT_MPS", "ace-step", num_gpus=1, label_selector={"pool": "mac"}),
        pool("Sketch", num_cpus=0.5),
    ]
    assert unplaceable_pools(pools, CLUSTER) == {}


def test_a_missing_accelerator_names_what_the_nodes_offer() -> None:
    reasons = unplaceable_pools(
        [pool("DiT_A100", "ace-step", num_gpus=1, accelerator_type="A100")], [H100, MAC, CPU_ONLY]
    )
    assert reasons == {"DiT_A100": "no node has accelerator_type A100 (nodes offer: H100, M2)"}


def test_a_missing_label_names_the_values_present() -> None:
    reasons = unplaceable_pools(
        [pool("DiT_MPS", "ace-step", num_gpus=1, label_selector={"pool": "mac"})], [HEAD, A100]
    )
    assert reasons == {"DiT_MPS": "no node is labelled pool=mac (nodes labelled pool: cuda)"}
    reasons = unplaceable_pools([pool("Pinned", label_selector={"zone": "eu"})], CLUSTER)
    assert reasons == {"Pinned": "no node is labelled zone=eu (no zone labels)"}


def test_too_many_gpus_names_the_largest_node() -> None:
    assert unplaceable_reason(ActorOptions(num_gpus=2), [H100, MAC]) == (
        "no node has 2 GPUs (the most on one node is 1 GPU)"
    )
    assert unplaceable_reason(ActorOptions(num_gpus=1), [HEAD, CPU_ONLY]) == (
        "no node has 1 GPU (none offers any)"
    )


def test_memory_cpus_and_custom_resources_are_checked() -> None:
    assert unplaceable_reason(ActorOptions(memory_bytes=1024 * GIB), CLUSTER) == (
        "no node has 1024.0 GiB of memory (the most on one node is 512.0 GiB of memory)"
    )
    assert unplaceable_reason(ActorOptions(num_cpus=64), CLUSTER) == (
        "no node has 64 CPUs (the most on one node is 32 CPUs)"
    )
    assert unplaceable_reason(ActorOptions(resources={"head": 0.01}), CLUSTER) == (
        "no node has resource head: 0.01 (none declares it)"
    )
    head_with_resource = NodeInfo("head", {"CPU": 1, "head": 1})
    assert unplaceable_reason(ActorOptions(resources={"head": 0.01}), [head_with_resource]) is None


def test_every_unmet_requirement_is_named() -> None:
    reason = unplaceable_reason(
        ActorOptions(num_gpus=16, accelerator_type="B200", label_selector={"pool": "blackwell"}),
        CLUSTER,
    )
    assert reason == (
        "no node has 16 GPUs (the most on one node is 8 GPUs); "
        "no node has accelerator_type B200 (nodes offer: A100, H100, M2); "
        "no node is labelled pool=blackwell (nodes labelled pool: cuda, mac)"
    )


def test_requirements_met_only_on_different_nodes_name_the_closest_node() -> None:
    # An A100 pool that also asks for the Mac label: each exists, never together.
    reason = unplaceable_reason(
        ActorOptions(num_gpus=1, accelerator_type="A100", label_selector={"pool": "mac"}), CLUSTER
    )
    assert reason == (
        "no single node has all of: 0.05 CPUs, 1 GPU, accelerator_type A100, label pool=mac "
        "(closest: node a1000000 lacks label pool=mac)"
    )


def test_dead_nodes_do_not_count() -> None:
    dead_a100 = NodeInfo(A100.node_id, A100.resources, A100.labels, alive=False)
    actor = ActorOptions(num_gpus=1, accelerator_type="A100")
    assert matching_nodes(actor, [dead_a100, H100]) == []
    assert unplaceable_reason(actor, [dead_a100, H100]) == (
        "no node has accelerator_type A100 (nodes offer: H100)"
    )
    assert unplaceable_reason(actor, [dead_a100]) == "no alive node in the cluster"
    assert unplaceable_reason(actor, []) == "no alive node in the cluster"


def test_accelerator_types_come_from_resources_and_ray_labels() -> None:
    labelled_only = NodeInfo("n", {"GPU": 1}, {"ray.io/accelerator-type": "L4"})
    assert labelled_only.accelerator_types == ["L4"]
    assert MAC.accelerator_types == ["M2"]
    assert CPU_ONLY.accelerator_types == []


def _config_file(name: str) -> AppConfig:
    return resolve_config(app_args_from_serve_config(load_serve_config(REPO / "config" / name)))


def test_checked_in_cluster_configs_place_on_the_clusters_they_describe() -> None:
    """config/mixed.yaml fits a head + A100 + Mac cluster; without the Mac, DiT_MPS is named.
    Only the ingress is tied to the head; the Macs get nothing but DiT_MPS."""
    config = _config_file("mixed.yaml")
    head = NodeInfo("head", {"CPU": 8, "memory": 32 * GIB}, {"role": "head"})
    cluster = [head, A100, MAC]
    assert unplaceable_pools(config.models.pools, cluster) == {}
    assert unplaceable_pools(config.models.pools, [head, A100]) == {
        "DiT_MPS": "no node is labelled pool=mac (nodes labelled pool: cuda)"
    }
    deployments = config.deployments
    assert ids(matching_nodes(deployments.api.actor, cluster)) == ["head"]
    for name in ("conductor", "lyrics", "tags", "router", "postprocess", "stems"):
        actor = getattr(deployments, name).actor
        assert ids(matching_nodes(actor, cluster)) == ["head", A100.node_id], name
        # "!mac" lets an unlabelled CPU node join the pool of hosts too.
        assert CPU_ONLY.node_id in ids(matching_nodes(actor, [*cluster, CPU_ONLY])), name
    # Demucs goes to the A100 node (a Mac advertises a GPU too: the pins keep it off).
    assert config.postprocess.stems.demucs_checkpoint is not None
    assert ids(matching_nodes(deployments.separator.actor, cluster)) == [A100.node_id]


def test_the_gpu_config_pins_only_the_ingress_to_the_head() -> None:
    config = _config_file("gpu.yaml")
    head = NodeInfo("head", {"CPU": 8, "memory": 32 * GIB}, {"role": "head"})
    cluster = [head, A100]
    assert unplaceable_pools(config.models.pools, cluster) == {}
    deployments = config.deployments
    assert ids(matching_nodes(deployments.api.actor, cluster)) == ["head"]
    for name in ("conductor", "lyrics", "tags", "router", "postprocess", "stems"):
        assert ids(matching_nodes(getattr(deployments, name).actor, cluster)) == [
            "head",
            A100.node_id,
        ], name
    assert ids(matching_nodes(deployments.separator.actor, cluster)) == [A100.node_id]


@pytest.mark.parametrize("name", ["gpu.yaml", "mixed.yaml", "prod.yaml"])
def test_cluster_configs_use_shared_stores_and_run_on_many_nodes(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in ("SONGSERVE_DATABASE_URL", "SONGSERVE_STORAGE_URL"):
        monkeypatch.delenv(variable, raising=False)
    config = _config_file(name)
    assert config.storage.is_shared
    assert config.storage.database_url.startswith("postgresql://")
    assert config.storage.storage_url.startswith("s3://")
    assert local_storage_conflicts(config, CLUSTER) is None


@pytest.mark.parametrize("name", ["local.yaml", "mac.yaml", "dev-acestep.yaml"])
def test_one_machine_configs_are_refused_on_a_cluster(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in ("SONGSERVE_DATABASE_URL", "SONGSERVE_STORAGE_URL"):
        monkeypatch.delenv(variable, raising=False)
    config = _config_file(name)
    assert local_storage_conflicts(config) is None  # fine on the one machine it is written for
    assert "SONGSERVE_DATABASE_URL=postgresql://" in (
        local_storage_conflicts(config, CLUSTER) or ""
    )


@pytest.mark.parametrize("name", ["prod.yaml", "local.yaml", "dev-acestep.yaml"])
def test_one_machine_configs_place_on_one_unlabelled_two_core_machine(name: str) -> None:
    """`serve run` starts a local Ray without labels and as many logical CPUs as cores: nothing
    in these configs may need a label, and their replicas must fit 2 CPUs (or the app stays
    DEPLOYING on the machine they are sized for)."""
    config = _config_file(name)
    machine = NodeInfo("local", {"CPU": 2, "memory": 8 * GIB, "node:__internal_head__": 1}, {})
    assert unplaceable_pools(config.models.pools, [machine]) == {}
    for name, options in config.deployments:
        assert unplaceable_reason(options.actor, [machine]) is None, name
    # Its minimum replicas fit the 2 CPUs of that machine.
    pools = [pool.deployment for pool in config.models.pools]
    fixed = [
        options
        for name, options in config.deployments
        if name != "separator" or config.postprocess.stems.demucs_checkpoint is not None
    ]
    reserved = sum(
        options.actor.num_cpus
        * (options.autoscaling.min_replicas if options.autoscaling else options.num_replicas)
        for options in [*pools, *fixed]
    )
    assert reserved <= 2 + 1e-9, reserved
