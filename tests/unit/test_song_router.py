"""SongRouter's choice of pool: spread by capacity share, ties in rotation, auto order, LoRA filter,
unplaceable pools skipped. No Ray: placement and replica counts come from synthetic sources."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

import pytest

from deployments.song_router import SongRouter, order_by_load
from serve.config import ModelsConfig, app_args_from_serve_config, load_serve_config
from serve.placement import NodeInfo
from tests.helpers import REPO

HEAD = NodeInfo("head0000aaaa", {"CPU": 8}, {"role": "head"})
A100 = NodeInfo(
    "a1000000bbbb",
    {"CPU": 32, "GPU": 8, "accelerator_type:A100": 1},
    {"pool": "cuda", "ray.io/accelerator-type": "A100"},
)
MAC = NodeInfo("mac00000dddd", {"CPU": 12, "GPU": 1, "accelerator_type:M2": 1}, {"pool": "mac"})


def mixed_models() -> ModelsConfig:
    """config/mixed.yaml's pools: DiT_CUDA (16 renders per replica) and DiT_MPS (4 per replica)."""
    args = app_args_from_serve_config(load_serve_config(REPO / "config" / "mixed.yaml"))
    return ModelsConfig.model_validate(args["models"])


def two_model_models() -> ModelsConfig:
    def pool(name: str, model: str) -> dict[str, Any]:
        ace_step = {"path": "/models/acestep"} if model == "ace-step" else None
        return {"name": name, "model": model, "ace_step": ace_step}

    return ModelsConfig.model_validate(
        {
            "auto_order": ["ace-step", "sketch"],
            "pools": [
                pool("SketchA", "sketch"),
                pool("DiT_A", "ace-step"),
                pool("DiT_B", "ace-step"),
            ],
        }
    )


def fixed_counts(counts: Mapping[str, int]) -> Callable[[Sequence[str]], Mapping[str, int]]:
    def replica_counts(deployments: Sequence[str]) -> Mapping[str, int]:
        return {name: counts[name] for name in deployments if name in counts}

    return replica_counts


@pytest.fixture
def nodes(monkeypatch: pytest.MonkeyPatch) -> list[NodeInfo]:
    """The cluster the router's placement check sees; tests may change the list."""
    cluster = [HEAD, A100, MAC]
    monkeypatch.setattr("serve.placement.cluster_nodes", lambda: list(cluster))
    return cluster


async def refreshed(router: SongRouter) -> None:
    """Waits until the router's first refresh has counted every pool's replicas."""
    for _ in range(500):
        if all(pool["replicas"] is not None for pool in await router.pools()):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the router never refreshed its replica counts")


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Runs an async test: SongRouter starts its refresh task on the running loop."""
    asyncio.run(scenario())


# -- order_by_load: the pure ordering ------------------------------------------------------------


def test_equal_pools_alternate_when_idle() -> None:
    firsts = [order_by_load(["A", "B"], {}, {"A": 4, "B": 4}, start)[0] for start in range(4)]
    assert firsts == ["A", "B", "A", "B"]


def test_a_full_pool_sorts_after_a_free_one() -> None:
    for start in range(2):
        assert order_by_load(["A", "B"], {"A": 4}, {"A": 4, "B": 4}, start) == ["B", "A"]
    # Busier in absolute numbers but with more room left: the bigger pool still comes first.
    assert order_by_load(["A", "B"], {"A": 8, "B": 3}, {"A": 16, "B": 4}, 1) == ["A", "B"]


@pytest.mark.parametrize(("big", "small", "renders"), [(16, 8, 24), (8, 4, 30), (2, 1, 9)])
def test_twice_the_capacity_holds_twice_the_concurrent_renders(
    big: int, small: int, renders: int
) -> None:
    capacity = {"Big": big, "Small": small}
    in_flight: Counter[str] = Counter()
    for start in range(renders):  # each render goes to the first pool and is held there
        in_flight[order_by_load(["Big", "Small"], in_flight, capacity, start)[0]] += 1
    assert in_flight["Big"] + in_flight["Small"] == renders
    assert abs(in_flight["Big"] - 2 * in_flight["Small"]) <= 2


def test_equal_pools_share_concurrent_renders_evenly() -> None:
    in_flight: Counter[str] = Counter()
    for start in range(9):
        pools = ["A", "B", "C"]
        in_flight[order_by_load(pools, in_flight, dict.fromkeys(pools, 3), start)[0]] += 1
    assert in_flight == {"A": 3, "B": 3, "C": 3}


# -- SongRouter with a real config -----------------------------------------------------------------


def test_capacity_is_running_replicas_times_max_ongoing(nodes: list[NodeInfo]) -> None:
    async def scenario() -> None:
        router = SongRouter(mixed_models(), {}, fixed_counts({"DiT_CUDA": 3, "DiT_MPS": 2}))
        await refreshed(router)
        pools = {p["name"]: p for p in await router.pools()}
        assert {name: (p["replicas"], p["capacity"]) for name, p in pools.items()} == {
            "DiT_CUDA": (3, 3 * 16),
            "DiT_MPS": (2, 2 * 4),
        }
        assert pools["DiT_MPS"]["in_flight"] == 0
        assert pools["DiT_MPS"]["placeable"] is True

    run(scenario)


def test_unknown_or_zero_replicas_count_as_one(
    nodes: list[NodeInfo], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(_: Sequence[str]) -> Mapping[str, int]:
        raise RuntimeError("no Serve controller")

    # Ray's "ray.serve" logger does not propagate to the root logger once ray.serve is imported.
    monkeypatch.setattr(logging.getLogger("ray.serve"), "handlers", [caplog.handler])

    async def scenario() -> None:
        before = SongRouter(mixed_models(), {}, fixed_counts({"DiT_CUDA": 3}))
        # Before the first refresh: one replica each, and both pools are candidates.
        assert [before.capacity("DiT_CUDA"), before.capacity("DiT_MPS")] == [16, 4]
        assert sorted(before.candidates("ace-step")) == ["DiT_CUDA", "DiT_MPS"]

        scaled_to_zero = SongRouter(mixed_models(), {}, fixed_counts({"DiT_CUDA": 0, "DiT_MPS": 1}))
        await refreshed(scaled_to_zero)
        assert (await scaled_to_zero.pools())[0]["replicas"] == 0
        assert scaled_to_zero.capacity("DiT_CUDA") == 16

        failing = SongRouter(mixed_models(), {}, broken)
        for _ in range(100):
            if "counting decoder pool replicas failed" in caplog.text:
                break
            await asyncio.sleep(0.01)
        assert "counting decoder pool replicas failed" in caplog.text
        assert [p["capacity"] for p in await failing.pools()] == [16, 4]
        assert not failing._placement_check.done()  # the watcher keeps going

    run(scenario)


def test_the_router_spreads_held_renders_by_capacity(nodes: list[NodeInfo]) -> None:
    async def scenario() -> None:
        # DiT_CUDA: 1 × 16, DiT_MPS: 2 × 4 — twice the capacity on CUDA.
        router = SongRouter(mixed_models(), {}, fixed_counts({"DiT_CUDA": 1, "DiT_MPS": 2}))
        await refreshed(router)
        with contextlib.ExitStack() as held:
            for _ in range(18):
                held.enter_context(router.rendering(router.candidates("auto")[0]))
            in_flight = {p["name"]: p["in_flight"] for p in await router.pools()}
            assert in_flight == {"DiT_CUDA": 12, "DiT_MPS": 6}
            # Both at 3/4 of capacity: ties rotate again.
            assert {router.candidates("ace-step")[0] for _ in range(2)} == {"DiT_CUDA", "DiT_MPS"}
        assert {p["in_flight"] for p in await router.pools()} == {0}

    run(scenario)


def test_a_failed_render_is_no_longer_in_flight(nodes: list[NodeInfo]) -> None:
    async def scenario() -> None:
        router = SongRouter(mixed_models(), {}, fixed_counts({}))
        with pytest.raises(RuntimeError), router.rendering("DiT_MPS"):
            assert (await router.pools())[1]["in_flight"] == 1
            raise RuntimeError("replica died")
        assert (await router.pools())[1]["in_flight"] == 0

    run(scenario)


def test_unplaceable_pools_are_never_candidates(nodes: list[NodeInfo]) -> None:
    nodes.remove(MAC)  # DiT_MPS needs a node labelled pool=mac

    async def scenario() -> None:
        router = SongRouter(mixed_models(), {}, fixed_counts({"DiT_CUDA": 1, "DiT_MPS": 1}))
        await refreshed(router)
        for _ in range(3):
            assert router.candidates("auto") == ["DiT_CUDA"]
        mps = (await router.pools())[1]
        assert mps["placeable"] is False
        assert "pool=mac" in mps["reason"]

    run(scenario)


def test_auto_keeps_the_model_order_and_lora_keeps_lora_models(nodes: list[NodeInfo]) -> None:
    async def scenario() -> None:
        router = SongRouter(two_model_models(), {}, fixed_counts({}))
        # Even with every ace-step pool full, auto tries ace-step before sketch.
        with router.rendering("DiT_A"), router.rendering("DiT_B"):
            assert router.candidates("auto")[2:] == ["SketchA"]
        orders = [router.candidates("auto") for _ in range(2)]
        assert orders == [["DiT_B", "DiT_A", "SketchA"], ["DiT_A", "DiT_B", "SketchA"]]
        assert sorted(router.candidates("auto", with_lora=True)) == ["DiT_A", "DiT_B"]
        assert router.candidates("sketch", with_lora=True) == []
        assert router.candidates("sketch") == ["SketchA"]

    run(scenario)
