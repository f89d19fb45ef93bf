"""SongRouter's choice of pool: expected wait from cluster-wide work in flight and measured speed,
ties in rotation, auto order, LoRA filter, unplaceable pools skipped, and routing on when the
store's counts are unavailable. No Ray: placement and replica counts come from synthetic sources;
cluster-wide counts from a real SQLite job store."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from deployments import song_router
from deployments.renders import RenderedSong, RenderProgress
from deployments.song_router import RenderingOn, SongRouter
from pipeline.song_models import RenderRequest
from pipeline.tags import StyleTags
from serve.config import ModelsConfig, app_args_from_serve_config, load_serve_config
from serve.placement import NodeInfo
from serve.pool_load import PoolLoad, SpeedMeter, expected_start_s, order_by_wait
from serve.store.records import PoolRenders
from serve.store.sqlite import SQLiteJobStore
from tests.helpers import REPO

HEAD = NodeInfo("head0000aaaa", {"CPU": 8}, {"role": "head"})
A100 = NodeInfo(
    "a1000000bbbb",
    {"CPU": 32, "GPU": 8, "accelerator_type:A100": 1},
    {"pool": "cuda", "ray.io/accelerator-type": "A100"},
)
MAC = NodeInfo("mac00000dddd", {"CPU": 12, "GPU": 1, "accelerator_type:M2": 1}, {"pool": "mac"})


def mixed_models(**speeds: float) -> ModelsConfig:
    """config/mixed.yaml's pools: DiT_CUDA (16 renders per replica) and DiT_MPS (4 per replica),
    with `expected_render_s_per_audio_s` per pool name as given."""
    args = app_args_from_serve_config(load_serve_config(REPO / "config" / "mixed.yaml"))
    for pool in args["models"]["pools"]:
        if pool["name"] in speeds:
            pool["expected_render_s_per_audio_s"] = speeds[pool["name"]]
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


def load(
    renders: int = 0,
    audio_s: float = 0.0,
    *,
    replicas: int = 1,
    slots: int = 1,
    speed: float = 0.1,
) -> PoolLoad:
    return PoolLoad(replicas, replicas * slots, renders, audio_s, speed)


def hold(
    pools: Sequence[str], loads: dict[str, PoolLoad], renders: int, audio_s: float = 10.0
) -> Counter[str]:
    """Sends `renders` renders of `audio_s` one by one to the first pool of `order_by_wait`, and
    holds them all there; returns how many each pool got."""
    got: Counter[str] = Counter()
    for start in range(renders):
        first = order_by_wait(pools, loads, start)[0]
        got[first] += 1
        held = loads[first]
        loads[first] = PoolLoad(
            held.replicas,
            held.capacity,
            held.renders + 1,
            held.audio_s + audio_s,
            held.seconds_per_audio_second,
        )
    return got


# -- serve.pool_load: the pure arithmetic ----------------------------------------------------------


def test_equal_idle_pools_alternate() -> None:
    loads = {"A": load(slots=4), "B": load(slots=4)}
    assert [order_by_wait(["A", "B"], loads, start)[0] for start in range(4)] == list("ABAB")


def test_a_pool_with_a_free_slot_comes_before_a_full_one() -> None:
    full = load(4, 40.0, slots=4, speed=0.01)  # very fast, but every slot busy
    free = load(3, 30.0, slots=4, speed=0.5)
    assert full.expected_wait_s > 0 and free.expected_wait_s == 0
    for start in range(2):
        assert order_by_wait(["A", "B"], {"A": full, "B": free}, start) == ["B", "A"]


def test_expected_wait_is_the_work_beyond_the_slots_over_replicas_times_speed() -> None:
    # 2 replicas × 1 slot, 0.1 s per audio second, 4 renders of 10 s in flight: the pool drains
    # 40 × 0.1 / 2 = 2 s of work; a new render starts once 3 of the 4 are done: 1.5 s.
    pool = load(4, 40.0, replicas=2, slots=1, speed=0.1)
    assert pool.drain_s == pytest.approx(2.0)
    assert pool.expected_wait_s == pytest.approx(1.5)
    assert load(1, 10.0, replicas=2, slots=1).expected_wait_s == 0.0
    # One busy slot: the new render waits for the one in flight.
    assert load(1, 10.0, speed=0.1).expected_wait_s == pytest.approx(1.0)


@pytest.mark.parametrize("slots", [1, 4])
def test_a_pool_twice_as_fast_takes_about_twice_the_songs(slots: int) -> None:
    loads = {
        "Fast": load(replicas=2, slots=slots, speed=0.05),
        "Slow": load(replicas=2, slots=slots, speed=0.1),
    }
    got = hold(["Fast", "Slow"], loads, 60)
    assert got["Fast"] + got["Slow"] == 60
    assert 1.7 <= got["Fast"] / got["Slow"] <= 2.3, got


def test_twice_the_replicas_take_about_twice_the_songs_at_equal_speed() -> None:
    loads = {"Big": load(replicas=4, speed=0.1), "Small": load(replicas=2, speed=0.1)}
    got = hold(["Big", "Small"], loads, 60)
    assert abs(got["Big"] - 2 * got["Small"]) <= 3, got


def test_equal_pools_share_held_renders_evenly() -> None:
    pools = ["A", "B", "C"]
    loads = {pool: load(replicas=3) for pool in pools}
    assert hold(pools, loads, 9) == {"A": 3, "B": 3, "C": 3}


def test_longer_work_in_flight_means_a_longer_wait() -> None:
    # Same number of renders, but one pool's are four times as long: the other pool is first.
    loads = {"Long": load(2, 240.0, replicas=2), "Short": load(2, 60.0, replicas=2)}
    for start in range(2):
        assert order_by_wait(["Long", "Short"], loads, start)[0] == "Short"


def test_speed_meter_starts_from_the_guess_and_shares_a_batch() -> None:
    meter = SpeedMeter(0.5)
    assert (meter.value, meter.renders) == (0.5, 0)
    meter.add(render_s=4.0, audio_s=10.0, batch_size=4)  # 0.1 s per audio second per song
    assert meter.renders == 1
    assert meter.value == pytest.approx((0.5 + 0.1) / 2)  # the guess counts as one render
    for _ in range(30):
        meter.add(render_s=1.0, audio_s=10.0)
    assert meter.value == pytest.approx(0.1, rel=0.01)
    meter.add(render_s=0.0, audio_s=10.0)  # a clock that did not move: ignored
    meter.add(render_s=1.0, audio_s=0.0)
    assert meter.renders == 31


def test_expected_start_is_the_work_ahead_over_the_pools_render_rate() -> None:
    # Two pools: 2 replicas at 0.1 (20 audio s/s) and 1 replica at 0.05 (20 audio s/s).
    pools = [load(replicas=2, speed=0.1), load(replicas=1, speed=0.05)]
    assert expected_start_s(400.0, pools) == pytest.approx(10.0)
    assert expected_start_s(0.0, pools) == 0.0
    assert expected_start_s(10.0, []) is None


# -- SongRouter with a real config -----------------------------------------------------------------


def test_capacity_is_running_replicas_times_max_ongoing(nodes: list[NodeInfo]) -> None:
    async def scenario() -> None:
        router = SongRouter(
            mixed_models(), {}, replica_counts=fixed_counts({"DiT_CUDA": 3, "DiT_MPS": 2})
        )
        await refreshed(router)
        pools = {p["name"]: p for p in await router.pools()}
        assert {name: (p["replicas"], p["capacity"]) for name, p in pools.items()} == {
            "DiT_CUDA": (3, 3 * 16),
            "DiT_MPS": (2, 2 * 4),
        }
        mps = pools["DiT_MPS"]
        assert (mps["in_flight"], mps["in_flight_audio_s"], mps["expected_wait_s"]) == (0, 0, 0)
        assert mps["placeable"] is True
        assert (mps["seconds_per_audio_second"], mps["measured_renders"]) == (0.05, 0)

    run(scenario)


def test_unknown_or_zero_replicas_count_as_one(
    nodes: list[NodeInfo], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(_: Sequence[str]) -> Mapping[str, int]:
        raise RuntimeError("no Serve controller")

    # Ray's "ray.serve" logger does not propagate to the root logger once ray.serve is imported.
    monkeypatch.setattr(logging.getLogger("ray.serve"), "handlers", [caplog.handler])

    async def scenario() -> None:
        before = SongRouter(mixed_models(), {}, replica_counts=fixed_counts({"DiT_CUDA": 3}))
        # Before the first refresh: one replica each, and both pools are candidates.
        assert [before.capacity("DiT_CUDA"), before.capacity("DiT_MPS")] == [16, 4]
        assert sorted(before.candidates("ace-step")) == ["DiT_CUDA", "DiT_MPS"]

        scaled_to_zero = SongRouter(
            mixed_models(), {}, replica_counts=fixed_counts({"DiT_CUDA": 0, "DiT_MPS": 1})
        )
        await refreshed(scaled_to_zero)
        assert (await scaled_to_zero.pools())[0]["replicas"] == 0
        assert scaled_to_zero.capacity("DiT_CUDA") == 16

        failing = SongRouter(mixed_models(), {}, replica_counts=broken)
        for _ in range(100):
            if "counting decoder pool replicas failed" in caplog.text:
                break
            await asyncio.sleep(0.01)
        assert "counting decoder pool replicas failed" in caplog.text
        assert [p["capacity"] for p in await failing.pools()] == [16, 4]
        assert not failing._placement_check.done()  # the watcher keeps going

    run(scenario)


def test_pools_still_starting_are_counted_again_within_seconds(
    nodes: list[NodeInfo], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Serve starts pool replicas after the router, one by one: /v1/pools must not undercount
    # them until the next slow refresh (15 s). Each pool here starts with one replica.
    monkeypatch.setattr(song_router, "STARTING_REFRESH_S", 0.05)
    counts = {"DiT_CUDA": 0, "DiT_MPS": 0}
    looks: list[dict[str, int]] = []

    def replica_counts(deployments: Sequence[str]) -> Mapping[str, int]:
        looks.append(dict(counts))
        return {name: counts[name] for name in deployments}

    async def scenario() -> None:
        router = SongRouter(mixed_models(), {}, replica_counts=replica_counts)
        await refreshed(router)
        assert [p["replicas"] for p in await router.pools()] == [0, 0]
        counts.update(DiT_CUDA=1)  # one pool up, the other still starting: keep looking
        counts.update(DiT_MPS=0)
        await asyncio.sleep(0.2)
        counts.update(DiT_MPS=1)
        for _ in range(100):
            if [p["replicas"] for p in await router.pools()] == [1, 1]:
                break
            await asyncio.sleep(0.01)
        assert [p["replicas"] for p in await router.pools()] == [1, 1]
        seen = len(looks)
        await asyncio.sleep(0.3)  # every pool runs: back to the slow refresh
        assert len(looks) == seen

    run(scenario)


def test_the_router_spreads_held_renders_by_speed(nodes: list[NodeInfo]) -> None:
    async def scenario() -> None:
        # 2 replicas each (8 slots on MPS, 32 on CUDA); CUDA assumed twice as fast.
        router = SongRouter(
            mixed_models(DiT_CUDA=0.05, DiT_MPS=0.1),
            {},
            replica_counts=fixed_counts({"DiT_CUDA": 2, "DiT_MPS": 2}),
        )
        await refreshed(router)
        with contextlib.ExitStack() as held:
            for _ in range(12):
                held.enter_context(router.rendering(router.candidates("auto")[0], 10.0))
            in_flight = {p["name"]: p["in_flight"] for p in await router.pools()}
            assert in_flight == {"DiT_CUDA": 8, "DiT_MPS": 4}
            # Once DiT_MPS's 8 slots are busy, new renders go where a slot is free.
            for _ in range(12):
                held.enter_context(router.rendering(router.candidates("auto")[0], 10.0))
            in_flight = {p["name"]: p["in_flight"] for p in await router.pools()}
            assert in_flight == {"DiT_CUDA": 16, "DiT_MPS": 8}
        assert {p["in_flight"] for p in await router.pools()} == {0}

    run(scenario)


def test_a_failed_render_is_no_longer_in_flight(nodes: list[NodeInfo]) -> None:
    async def scenario() -> None:
        router = SongRouter(mixed_models(), {}, replica_counts=fixed_counts({}))
        with pytest.raises(RuntimeError), router.rendering("DiT_MPS", 30.0):
            mps = (await router.pools())[1]
            assert (mps["in_flight"], mps["in_flight_audio_s"]) == (1, 30.0)
            raise RuntimeError("replica died")
        assert (await router.pools())[1]["in_flight"] == 0

    run(scenario)


def test_unplaceable_pools_are_never_candidates(nodes: list[NodeInfo]) -> None:
    nodes.remove(MAC)  # DiT_MPS needs a node labelled pool=mac

    async def scenario() -> None:
        router = SongRouter(
            mixed_models(), {}, replica_counts=fixed_counts({"DiT_CUDA": 1, "DiT_MPS": 1})
        )
        await refreshed(router)
        for _ in range(3):
            assert router.candidates("auto") == ["DiT_CUDA"]
        mps = (await router.pools())[1]
        assert mps["placeable"] is False
        assert "pool=mac" in mps["reason"]

    run(scenario)


def test_auto_keeps_the_model_order_and_lora_keeps_lora_models(nodes: list[NodeInfo]) -> None:
    async def scenario() -> None:
        router = SongRouter(two_model_models(), {}, replica_counts=fixed_counts({}))
        # Even with every ace-step pool full, auto tries ace-step before sketch.
        with router.rendering("DiT_A", 10.0), router.rendering("DiT_B", 10.0):
            assert router.candidates("auto")[2:] == ["SketchA"]
        orders = [router.candidates("auto") for _ in range(2)]
        assert orders == [["DiT_B", "DiT_A", "SketchA"], ["DiT_A", "DiT_B", "SketchA"]]
        assert sorted(router.candidates("auto", with_lora=True)) == ["DiT_A", "DiT_B"]
        assert router.candidates("sketch", with_lora=True) == []
        assert router.candidates("sketch") == ["SketchA"]

    run(scenario)


# -- cluster-wide counts from the job store --------------------------------------------------------


async def _running_on(store: SQLiteJobStore, pools: Sequence[str], duration_s: float) -> None:
    """One job claimed by "another conductor", with a variation rendering on each of `pools`."""
    job, _ = await store.create_job(
        owner="o", request={"duration_s": duration_s}, seed=1, variations=len(pools)
    )
    claimed = await store.claim_next("elsewhere", lease_s=60, max_attempts=3)
    assert claimed is not None and claimed.lease_token is not None
    for index, pool in enumerate(pools):
        await store.update_variation(
            job.id, index, claimed.lease_token, status="running", render={"pool": pool}
        )


def test_renders_routed_by_other_replicas_count(nodes: list[NodeInfo], tmp_path: Path) -> None:
    async def scenario() -> None:
        store = SQLiteJobStore(tmp_path / "jobs.db")
        try:
            router = SongRouter(
                mixed_models(),
                {},
                replica_counts=fixed_counts({"DiT_CUDA": 1, "DiT_MPS": 1}),
                cluster_load=store.renders_by_pool,
            )
            await refreshed(router)
            # Other routers' renders: DiT_CUDA has all 16 slots busy with 60 s songs.
            await _running_on(store, ["DiT_CUDA"] * 16, 60.0)
            await asyncio.sleep(song_router.LOAD_CACHE_S)
            await router.refresh_load()
            assert router.candidates("auto")[0] == "DiT_MPS"
            pools = {p["name"]: p for p in await router.pools()}
            cuda = pools["DiT_CUDA"]
            assert (cuda["in_flight"], cuda["in_flight_audio_s"]) == (16, 960.0)
            assert cuda["in_flight_source"] == "cluster"
            # Full: the next render waits for one of the 16 (960 × 0.05 / 1 × 1/16 s).
            assert cuda["expected_wait_s"] == pytest.approx(3.0)
            # This router's own renders since the store's count are added to it.
            with router.rendering("DiT_MPS", 30.0):
                assert router.load("DiT_MPS").renders == 1
        finally:
            await store.close()

    run(scenario)


def test_a_burst_shares_one_store_query(nodes: list[NodeInfo]) -> None:
    queries = 0

    async def counted() -> Mapping[str, PoolRenders]:
        nonlocal queries
        queries += 1
        await asyncio.sleep(0.05)
        return {}

    async def scenario() -> None:
        router = SongRouter(
            mixed_models(), {}, replica_counts=fixed_counts({}), cluster_load=counted
        )
        await asyncio.gather(*(router.refresh_load() for _ in range(20)))
        await router.refresh_load()
        assert queries == 1
        await asyncio.sleep(song_router.LOAD_CACHE_S)
        await router.refresh_load()
        assert queries == 2

    run(scenario)


def test_routing_goes_on_when_the_store_cannot_count(
    nodes: list[NodeInfo], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(song_router, "LOAD_CACHE_S", 0.0)
    monkeypatch.setattr(song_router, "LOAD_TIMEOUT_S", 0.1)
    monkeypatch.setattr(song_router, "LOAD_STALE_S", 0.5)
    monkeypatch.setattr(song_router, "LOAD_QUERY_TIMEOUT_S", 0.3)
    answers: list[Any] = [{"DiT_CUDA": PoolRenders(16, 480.0)}]

    async def flaky() -> Mapping[str, PoolRenders]:
        answer = answers[0]
        if answer == "hang":
            await asyncio.sleep(30)
        if isinstance(answer, Exception):
            raise answer
        return dict(answer)

    async def scenario() -> None:
        router = SongRouter(mixed_models(), {}, replica_counts=fixed_counts({}), cluster_load=flaky)
        await router.refresh_load()
        assert router.load("DiT_CUDA").renders == 16
        # Down: the last counts stay in use for a while ...
        answers[0] = ConnectionError("the database is restarting")
        await router.refresh_load()
        assert router.load("DiT_CUDA").renders == 16
        assert router.candidates("ace-step")[0] == "DiT_MPS"
        # ... then only this router's own renders count, and it still routes.
        answers[0] = "hang"
        await asyncio.sleep(0.5)
        started = asyncio.get_running_loop().time()
        await router.refresh_load()  # waits at most LOAD_TIMEOUT_S
        assert asyncio.get_running_loop().time() - started < 1.0
        with router.rendering("DiT_MPS", 10.0):
            pools = {p["name"]: p for p in await router.pools()}
            assert pools["DiT_CUDA"]["in_flight"] == 0
            assert pools["DiT_MPS"]["in_flight"] == 1
            assert pools["DiT_MPS"]["in_flight_source"] == "router"
            assert router.candidates("ace-step")[0] == "DiT_CUDA"
        # Back: cluster counts again (the hung query was given up).
        answers[0] = {"DiT_MPS": PoolRenders(2, 20.0)}
        await asyncio.sleep(0.3)
        await router.refresh_load()
        assert router.load("DiT_MPS").renders == 2

    run(scenario)


# -- generate: what the conductor sees -------------------------------------------------------------


class _Pool:
    """A decoder pool's handle as the router uses it: `.options(...).render.remote(request)`
    streams progress, then a song whose timings say it took `render_s`."""

    def __init__(self, name: str, render_s: float, fail: bool = False) -> None:
        self.name, self.render_s, self.fail = name, render_s, fail
        self.render = self

    def options(self, **_: Any) -> _Pool:
        return self

    async def remote(self, request: RenderRequest) -> AsyncIterator[Any]:
        if self.fail:
            raise RuntimeError(f"{self.name} lost its replica")
        yield RenderProgress(1, 1)
        yield RenderedSong(
            render_key="k",
            n_samples=int(request.duration_s * 48_000),
            sample_rate=48_000,
            model="ace-step",
            model_version="1",
            replica=f"{self.name}@x",
            render_started_at=100.0,
            render_finished_at=100.0 + self.render_s,
            batch_size=2,
            pool=self.name,
        )


def test_generate_names_each_pool_tried_and_measures_the_one_that_rendered(
    nodes: list[NodeInfo],
) -> None:
    async def scenario() -> None:
        handles = {"DiT_CUDA": _Pool("DiT_CUDA", 0.0, fail=True), "DiT_MPS": _Pool("DiT_MPS", 4.0)}
        router = SongRouter(mixed_models(), handles, replica_counts=fixed_counts({}))
        request = RenderRequest("song_x", 0, 1, 20.0, StyleTags("pop", None, "pop"), [], True, "en")
        # DiT_CUDA first (rotation), it fails, DiT_MPS renders.
        router.candidates("ace-step")
        router.candidates("ace-step")
        items = [item async for item in router.generate(request, "ace-step")]
        assert items[0] == RenderingOn("DiT_CUDA")
        assert items[1] == RenderingOn("DiT_MPS")
        assert isinstance(items[-1], RenderedSong) and items[-1].pool == "DiT_MPS"
        mps = (await router.pools())[1]
        # 4 s for a batch of 2 songs of 20 s: 0.1 s per audio second, averaged with the guess.
        assert mps["measured_renders"] == 1
        assert mps["seconds_per_audio_second"] == pytest.approx((0.05 + 0.1) / 2)
        assert mps["in_flight"] == 0

    run(scenario)


def test_only_pools_that_serve_a_task_are_candidates_for_it(nodes: list[NodeInfo]) -> None:
    """A turbo pool serves no covers (config/mixed.yaml's two are turbo); a pool of a base
    checkpoint next to it does."""
    models = mixed_models()
    base = models.pools[0].model_copy(update={"name": "DiT_Base", "tasks": None})
    models = models.model_copy(update={"pools": [*models.pools, base]})

    async def scenario() -> None:
        router = SongRouter(models, {}, replica_counts=fixed_counts({}))
        assert sorted(router.candidates("ace-step", task="repaint")) == [
            "DiT_Base",
            "DiT_CUDA",
            "DiT_MPS",
        ]
        assert router.candidates("ace-step", task="cover") == ["DiT_Base"]
        assert router.candidates("auto", task="cover") == ["DiT_Base"]
        assert router.candidates("auto", task="cover", reference=True) == ["DiT_Base"]
        assert router.candidates("sketch", task="cover") == []

    run(scenario)
