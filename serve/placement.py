"""Placement checks: which decoder pools no node of the cluster can host, and why.

Ray Serve leaves a deployment DEPLOYING forever, with no error, when no node satisfies its
replicas' actor options (an `accelerator_type` nobody has, a `label_selector` no node carries,
more GPUs than any node offers). These functions say so up front, in words an operator can act
on, by comparing each pool's `ActorOptions` with every alive node's total resources and labels.

The check is per replica: a pool is placeable when one alive node could host one of its replicas
on an otherwise empty node. Capacity already taken by other replicas is not counted — that is a
scheduling delay, not a configuration error, and the autoscaler may add nodes for it.

The logic is pure (no Ray import at module level) so it runs in unit tests and in the builder;
`cluster_nodes()` alone talks to Ray.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import ActorOptions, AppConfig, DecoderPoolConfig

__all__ = [
    "NodeInfo",
    "cluster_nodes",
    "local_storage_conflicts",
    "matching_nodes",
    "unplaceable_pools",
    "unplaceable_reason",
]

# Ray turns `accelerator_type="A100"` into a demand for a sliver of this resource; a node with a
# detected (or declared) A100 advertises `accelerator_type:A100: 1`.
ACCELERATOR_RESOURCE_PREFIX = "accelerator_type:"
# Ray's own labels; nodes also carry the accelerator type here when Ray detected one.
ACCELERATOR_LABEL = "ray.io/accelerator-type"

_GIB = 1024**3


@dataclass(frozen=True)
class NodeInfo:
    """One Ray node as the scheduler sees it: total logical resources and labels.

    `resources` uses Ray's names: `CPU`, `GPU`, `memory` (bytes), `accelerator_type:<type>`, and
    custom resources by their own names.
    """

    node_id: str
    resources: dict[str, float] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    alive: bool = True

    @property
    def accelerator_types(self) -> list[str]:
        """Accelerator types this node offers (from its resources and Ray's label), sorted."""
        types = {
            name.removeprefix(ACCELERATOR_RESOURCE_PREFIX)
            for name, amount in self.resources.items()
            if name.startswith(ACCELERATOR_RESOURCE_PREFIX) and amount > 0
        }
        if self.labels.get(ACCELERATOR_LABEL):
            types.add(self.labels[ACCELERATOR_LABEL])
        return sorted(types)

    @property
    def short_id(self) -> str:
        return self.node_id[:8]


def cluster_nodes() -> list[NodeInfo]:
    """Every node the connected Ray cluster knows, dead ones included (with `alive=False`).

    Needs a connected driver (`ray.init(...)`, or code running inside a replica); raises Ray's
    error otherwise. Uses Ray's public `ray.nodes()`, so it reads the GCS and is cheap enough for
    a health check, but not for every request.
    """
    import ray

    return [
        NodeInfo(
            node_id=str(node.get("NodeID", "")),
            resources={str(k): float(v) for k, v in (node.get("Resources") or {}).items()},
            labels={str(k): str(v) for k, v in (node.get("Labels") or {}).items()},
            alive=bool(node.get("Alive", False)),
        )
        for node in ray.nodes()
    ]


def unplaceable_pools(
    pools: Iterable[DecoderPoolConfig], nodes: Iterable[NodeInfo]
) -> dict[str, str]:
    """Pool name → why no alive node can host one of its replicas; placeable pools are absent.

    An empty result means every pool can be scheduled somewhere. Reasons name the requirement and
    what the cluster offers instead, e.g. "no node has accelerator_type A100 (nodes offer: H100,
    M2)" or "no node is labelled pool=mac (nodes labelled pool: cuda)".
    """
    node_list = list(nodes)
    reasons: dict[str, str] = {}
    for pool in pools:
        reason = unplaceable_reason(pool.deployment.actor, node_list)
        if reason is not None:
            reasons[pool.name] = reason
    return reasons


def matching_nodes(actor: ActorOptions, nodes: Iterable[NodeInfo]) -> list[NodeInfo]:
    """The alive nodes on which one replica with these actor options fits, in the given order."""
    requirements = _requirements(actor)
    return [
        node for node in nodes if node.alive and all(r.satisfied_by(node) for r in requirements)
    ]


def unplaceable_reason(actor: ActorOptions, nodes: Iterable[NodeInfo]) -> str | None:
    """Why no alive node can host one replica with these actor options, or None if one can.

    Every requirement that no node meets on its own is named, with what the nodes offer; when
    each is met somewhere but never all on one node, the reason names the closest node and what
    it lacks.
    """
    alive = [node for node in nodes if node.alive]
    if not alive:
        return "no alive node in the cluster"
    requirements = _requirements(actor)
    if any(all(r.satisfied_by(node) for r in requirements) for node in alive):
        return None
    unmet_anywhere = [r for r in requirements if not any(r.satisfied_by(n) for n in alive)]
    if unmet_anywhere:
        return "; ".join(r.shortfall(alive) for r in unmet_anywhere)
    # Each requirement is met by some node, but never all of them by the same node.
    closest = min(alive, key=lambda node: sum(not r.satisfied_by(node) for r in requirements))
    lacking = ", ".join(r.description for r in requirements if not r.satisfied_by(closest))
    wanted = ", ".join(r.description for r in requirements)
    return f"no single node has all of: {wanted} (closest: node {closest.short_id} lacks {lacking})"


HEAD_SELECTOR = {"role": "head"}
"""The label the example configs give the head node (`ray start --head --labels=role=head`)."""


def store_touching_deployments(config: AppConfig) -> dict[str, ActorOptions]:
    """Setting name → actor options of every deployment that reads or writes the job store or the
    object store (the router and the tag normaliser touch neither)."""
    touching = {
        f"deployments.{name}": getattr(config.deployments, name).actor
        for name in ("api", "conductor", "postprocess", "stems", "lyrics")
    }
    if config.postprocess.stems.demucs_checkpoint is not None:
        touching["deployments.separator"] = config.deployments.separator.actor
    for pool in config.models.pools:  # LoRA weights in, raw renders out
        touching[f"models.pools[{pool.name}].deployment"] = pool.deployment.actor
    return touching


def local_storage_conflicts(
    config: AppConfig, nodes: Iterable[NodeInfo] | None = None
) -> str | None:
    """Why this config cannot run on this cluster with its local stores, or None.

    SQLite and local files live on one node's disk: a replica on any other node would write where
    no one reads. So with them every store-touching deployment must stay on one node — refused
    when one is pinned off the head (an accelerator type, or a label other than role=head), and,
    when `nodes` are known, when the cluster has more than one alive node. Postgres and S3 lift
    the restriction (`StorageConfig.is_shared`).
    """
    storage = config.storage
    if storage.is_shared:
        return None
    local = [
        name
        for name, url in (
            ("storage.database_url", storage.database_url),
            ("storage.storage_url", storage.storage_url),
        )
        if not url.startswith(("postgresql:", "postgres:", "s3:"))
    ]
    fix = (
        f"{' and '.join(local)} {'keep' if len(local) > 1 else 'keeps'} state on one node's "
        "disk; for a cluster set "
        "SONGSERVE_DATABASE_URL=postgresql://… and SONGSERVE_STORAGE_URL=s3://… (songserve "
        "services up starts both locally to try)"
    )
    off_head = sorted(
        name
        for name, actor in store_touching_deployments(config).items()
        if actor.accelerator_type
        or (actor.label_selector and actor.label_selector != HEAD_SELECTOR)
    )
    if off_head:
        return f"{', '.join(off_head)} are placed off the head node but {fix}"
    alive = [node for node in nodes or () if node.alive]
    if len(alive) > 1:
        return f"the cluster has {len(alive)} nodes but {fix}"
    return None


# --------------------------------------------------------------------------------------------------
# Requirements


@dataclass(frozen=True)
class _Requirement:
    """One thing a replica needs from its node."""

    description: str  # e.g. "1 GPU", "accelerator_type A100", "label pool=mac"
    satisfied_by: Callable[[NodeInfo], bool]
    shortfall: Callable[[list[NodeInfo]], str]  # why no node in the list satisfies it


def _requirements(actor: ActorOptions) -> list[_Requirement]:
    requirements: list[_Requirement] = []
    if actor.num_cpus > 0:
        requirements.append(_amount("CPU", actor.num_cpus, _count("CPU")))
    if actor.num_gpus > 0:
        requirements.append(_amount("GPU", actor.num_gpus, _count("GPU")))
    if actor.memory_bytes:
        requirements.append(_amount("memory", actor.memory_bytes, _gib))
    for name, amount in sorted(actor.resources.items()):
        if amount > 0:
            requirements.append(_amount(name, amount, _custom(name)))
    if actor.accelerator_type:
        requirements.append(_accelerator(actor.accelerator_type))
    for key, selector in sorted(actor.label_selector.items()):
        requirements.append(_label(key, selector))
    return requirements


def _number(amount: float) -> str:
    return f"{amount:g}"


def _count(unit: str) -> Callable[[float], str]:
    def describe(amount: float) -> str:
        return f"{_number(amount)} {unit}" + ("" if amount == 1 else "s")

    return describe


def _gib(amount: float) -> str:
    return f"{amount / _GIB:.1f} GiB of memory"


def _custom(name: str) -> Callable[[float], str]:
    def describe(amount: float) -> str:
        return f"resource {name}: {_number(amount)}"

    return describe


def _amount(resource: str, needed: float, describe: Callable[[float], str]) -> _Requirement:
    def shortfall(nodes: list[NodeInfo]) -> str:
        largest = max(node.resources.get(resource, 0.0) for node in nodes)
        if largest <= 0:
            offered = "none offers any" if resource in ("CPU", "GPU") else "none declares it"
        else:
            offered = f"the most on one node is {describe(largest).removeprefix('resource ')}"
        return f"no node has {describe(needed)} ({offered})"

    return _Requirement(
        description=describe(needed),
        satisfied_by=lambda node: node.resources.get(resource, 0.0) >= needed,
        shortfall=shortfall,
    )


def _accelerator(accelerator_type: str) -> _Requirement:
    def shortfall(nodes: list[NodeInfo]) -> str:
        offered = sorted({t for node in nodes for t in node.accelerator_types})
        return (
            f"no node has accelerator_type {accelerator_type} "
            f"(nodes offer: {', '.join(offered) if offered else 'none'})"
        )

    return _Requirement(
        description=f"accelerator_type {accelerator_type}",
        satisfied_by=lambda node: accelerator_type in node.accelerator_types,
        shortfall=shortfall,
    )


# Ray's selector values: "v" (equal), "!v" (not equal), "in(a, b)", "!in(a, b)". Negations match
# nodes without the label too (as Ray schedules them).
_IN_SELECTOR = re.compile(r"^in\((?P<values>.*)\)$")


def _label(key: str, selector: str) -> _Requirement:
    negated = selector.startswith("!")
    body = selector[1:] if negated else selector
    in_match = _IN_SELECTOR.match(body)
    values = (
        frozenset(v.strip() for v in in_match.group("values").split(","))
        if in_match
        else frozenset({body})
    )

    def satisfied_by(node: NodeInfo) -> bool:
        value = node.labels.get(key)
        if negated:
            return value not in values
        return value in values

    if in_match:
        wanted = f"{key} {'not ' if negated else ''}in ({', '.join(sorted(values))})"
    else:
        wanted = f"{key}{'!=' if negated else '='}{body}"

    def shortfall(nodes: list[NodeInfo]) -> str:
        present = sorted({node.labels[key] for node in nodes if key in node.labels})
        offered = f"nodes labelled {key}: {', '.join(present)}" if present else f"no {key} labels"
        return f"no node is labelled {wanted} ({offered})"

    return _Requirement(
        description=f"label {wanted}", satisfied_by=satisfied_by, shortfall=shortfall
    )
