"""The Conductor's workflow with fake stages (no Ray): stage retries with backoff, renders kept
when mastering fails, a song never ending `succeeded` with a failed variation, one terminal
event per variation, and fencing by claim token."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from deployments.conductor import Conductor
from deployments.lyrics_llm import WrittenLyrics
from deployments.post_processor import ProcessedVariation
from deployments.renders import RenderedSong, RenderProgress
from pipeline.song_models import RenderRequest
from pipeline.tags import StyleTags
from serve.config import AppConfig, resolve_config
from serve.store import JobRecord, raw_render_key
from serve.store.files import FilesystemObjectStore
from serve.store.sqlite import SQLiteJobStore

# Serve awaits the conductor's async __del__; the garbage collector of a test process cannot.
pytestmark = pytest.mark.filterwarnings("ignore:coroutine 'Conductor.__del__' was never awaited")


class FakeStream:
    """A streaming handle call (`DeploymentResponseGenerator`): iterates an async generator and
    records `cancel()`, which Serve would send to the callee."""

    def __init__(self, items: AsyncIterator[Any]) -> None:
        self._items = items
        self.cancelled = False

    def __aiter__(self) -> FakeStream:
        return self

    async def __anext__(self) -> Any:
        return await self._items.__anext__()

    def cancel(self) -> None:
        self.cancelled = True


class FakeMethod:
    """`handle.method.remote(...)`: runs `behaviour` (a coroutine function or an async generator
    function) and counts calls; `streams` holds each streaming call."""

    def __init__(self, behaviour: Callable[..., Any]) -> None:
        self.behaviour = behaviour
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        self.streams: list[FakeStream] = []

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append((args, kwargs))
        result = self.behaviour(*args, **kwargs)
        if inspect.isasyncgen(result):
            self.streams.append(FakeStream(result))
            return self.streams[-1]
        return result


class FakeHandle:
    def __init__(self, **methods: Callable[..., Any]) -> None:
        self.methods = {name: FakeMethod(fn) for name, fn in methods.items()}

    def options(self, **_: Any) -> FakeHandle:
        return self

    def __getattr__(self, name: str) -> FakeMethod:
        try:
            return self.methods[name]
        except KeyError:
            raise AttributeError(name) from None


def failing(times: int, error: Exception, then: Callable[..., Any]) -> Callable[..., Any]:
    """A behaviour that raises `error` on its first `times` calls, then behaves like `then`
    (streaming when `then` is an async generator function, as the router's `generate` is)."""
    calls = {"n": 0}

    async def broken_stream() -> AsyncIterator[Any]:
        raise error
        yield  # pragma: no cover - makes this an async generator

    async def broken() -> Any:
        raise error

    def behaviour(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] <= times:
            return broken_stream() if inspect.isasyncgenfunction(then) else broken()
        return then(*args, **kwargs)

    return behaviour


class Graph:
    """The conductor's downstream stages as fakes over a real object store."""

    def __init__(self, objects: FilesystemObjectStore) -> None:
        self.objects = objects

    async def write(self, prompt: str, duration_s: float, **_: Any) -> WrittenLyrics:
        return WrittenLyrics(text="[verse]\nla la", sections=[], engine="template", model="t")

    async def normalize(self, text: str, **_: Any) -> StyleTags:
        return StyleTags(genre="pop", subgenre=None, family="pop")

    async def generate(self, request: RenderRequest, model: str) -> AsyncIterator[Any]:
        for step in (1, 2):
            yield RenderProgress(step, 2)
        key = raw_render_key(request.job_id, request.variation)
        await self.objects.put(key, b"raw render bytes", "application/x-npy")
        yield RenderedSong(
            render_key=key,
            n_samples=480,
            sample_rate=48_000,
            model="fake",
            model_version="1",
            replica="fake@test",
            render_started_at=time.time(),
            render_finished_at=time.time(),
        )

    async def process(self, rendered: RenderedSong, *, job_id: str, index: int, **_: Any) -> Any:
        assert await self.objects.get(rendered.render_key) == b"raw render bytes"
        return ProcessedVariation(
            duration_s=0.01,
            sample_rate=48_000,
            loudness_lufs=-14.0,
            true_peak_dbtp=-1.0,
            objects={"wav": f"songs/{job_id}/v{index}/audio.wav"},
        )


def config_for(tmp_path: Path, **jobs: Any) -> AppConfig:
    settings = {
        "lease_s": 5.0,
        "heartbeat_s": 0.5,
        "poll_interval_s": 0.05,
        "retry_backoff_s": 0.01,
        "retry_backoff_max_s": 0.05,
        **jobs,
    }
    return resolve_config({"storage": {"data_dir": str(tmp_path)}, "jobs": settings})


async def run_song(
    tmp_path: Path,
    *,
    variations: int = 2,
    request: dict[str, Any] | None = None,
    timeout_s: float = 20.0,
    jobs: dict[str, Any] | None = None,
    **overrides: Callable[..., Any],
) -> tuple[JobRecord, Graph, dict[str, FakeHandle], SQLiteJobStore]:
    """Queue one song, let a Conductor over fake stages (`overrides` by method name) drive it,
    with `jobs` settings; return the finished job."""
    config = config_for(tmp_path, **(jobs or {}))
    store = SQLiteJobStore(config.storage.database_path)
    graph = Graph(FilesystemObjectStore(config.storage.storage_path))
    handles = {
        "lyrics": FakeHandle(write=overrides.get("write", graph.write)),
        "tags": FakeHandle(normalize=overrides.get("normalize", graph.normalize)),
        "router": FakeHandle(generate=overrides.get("generate", graph.generate)),
        "postprocessor": FakeHandle(process=overrides.get("process", graph.process)),
    }
    body = {
        "prompt": "a song about tests",
        "duration_s": 5.0,
        "language": "en",
        "instrumental": False,
        "model": "auto",
        "loudness_lufs": -14.0,
        **(request or {}),
    }
    job, _ = await store.create_job(owner="o", request=body, seed=7, variations=variations)
    conductor = Conductor(config, **handles)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            current = await store.get_job(job.id)
            assert current is not None
            if current.is_terminal:
                break
            assert time.monotonic() < deadline, f"the song did not finish: {current}"
            await asyncio.sleep(0.05)
    finally:
        await conductor.__del__()
    return current, graph, handles, store


def variation_events(store: SQLiteJobStore, job_id: str) -> list[dict[str, Any]]:
    events = asyncio.run(store.events_after(job_id, 0))
    return [e.data for e in events if e.type == "variation"]


def test_a_song_succeeds_with_one_terminal_event_per_variation(tmp_path: Path) -> None:
    job, _, handles, store = asyncio.run(run_song(tmp_path, variations=3))
    assert job.status == "succeeded"
    assert [v.status for v in job.variations] == ["succeeded"] * 3
    events = variation_events(store, job.id)
    assert sorted(e["index"] for e in events) == [0, 1, 2]
    assert len(handles["router"].generate.calls) == 3
    # The variation records where its raw render is: a later master needs no new render.
    assert job.variations[0].render["raw"]["render_key"] == raw_render_key(job.id, 0)


@pytest.mark.parametrize(
    ("lora", "loaded_as"),
    [
        ({"id": "style", "ref": "own_a/style", "scale": 0.5}, "own_a/style"),
        ({"id": "style", "scale": 0.5}, "style"),  # accepted before LoRAs had scopes
    ],
)
def test_a_lora_renders_by_its_ref_and_is_credited_by_its_id(
    tmp_path: Path, lora: dict[str, Any], loaded_as: str
) -> None:
    job, _, handles, _ = asyncio.run(run_song(tmp_path, variations=1, request={"lora": lora}))
    assert job.status == "succeeded", job.error
    (render_request, _), _ = handles["router"].generate.calls[0]
    assert (render_request.lora_id, render_request.lora_scale) == (loaded_as, 0.5)
    # Content credentials leave the server: they name the id, never the owner in the ref.
    (_, kwargs) = handles["postprocessor"].process.calls[0]
    assert kwargs["provenance"].lora_id == "style"


def test_a_decoder_failing_twice_is_retried_with_backoff(tmp_path: Path) -> None:
    # The pool restarts: two renders fail, the third works.
    graph = Graph(FilesystemObjectStore(config_for(tmp_path).storage.storage_path))
    job, _, handles, store = asyncio.run(
        run_song(
            tmp_path,
            variations=1,
            generate=failing(2, RuntimeError("replica died"), graph.generate),
        )
    )
    assert job.status == "succeeded", job.error
    assert len(handles["router"].generate.calls) == 3
    events = variation_events(store, job.id)
    assert [e["status"] for e in events] == ["succeeded"]  # never a `failed` first


def test_a_failed_master_is_retried_without_rendering_again(tmp_path: Path) -> None:
    async def scenario() -> tuple[JobRecord, dict[str, FakeHandle]]:
        config = config_for(tmp_path)
        graph = Graph(FilesystemObjectStore(config.storage.storage_path))
        job, _, handles, _ = await run_song(
            tmp_path,
            variations=1,
            process=failing(2, RuntimeError("post-processor died"), graph.process),
        )
        return job, handles

    job, handles = asyncio.run(scenario())
    assert job.status == "succeeded", job.error
    assert len(handles["router"].generate.calls) == 1  # rendered once, mastered three times
    assert len(handles["postprocessor"].process.calls) == 3


def test_a_variation_failing_for_good_fails_the_song_with_the_reason(tmp_path: Path) -> None:
    async def never(*_: Any, **__: Any) -> Any:
        raise RuntimeError("the decoder is broken")

    job, _, _, store = asyncio.run(
        run_song(tmp_path, variations=2, process=never, jobs={"variation_attempts": 3})
    )
    assert job.status == "failed"
    assert job.error is not None and job.error["code"] == "generation_failed"
    assert "the decoder is broken" in job.error["message"]
    assert "failed 3 time(s)" in job.error["message"]
    assert any(v.status == "failed" for v in job.variations)
    assert not any(e["status"] == "succeeded" for e in variation_events(store, job.id))
    events = asyncio.run(store.events_after(job.id, 0))
    assert [e.type for e in events].count("error") == 1
    assert "done" not in [e.type for e in events]


def test_the_lyrics_stage_is_retried_then_fails_the_song_with_a_reason(tmp_path: Path) -> None:
    graph = Graph(FilesystemObjectStore(tmp_path / "x"))
    job, _, handles, _ = asyncio.run(
        run_song(
            tmp_path,
            variations=1,
            write=failing(2, ConnectionError("lyrics replica died"), graph.write),
        )
    )
    assert job.status == "succeeded", job.error
    assert len(handles["lyrics"].write.calls) == 3

    job, _, handles, _ = asyncio.run(
        run_song(
            tmp_path / "again",
            variations=1,
            write=failing(99, ConnectionError("lyrics replica died"), graph.write),
            jobs={"stage_attempts": 2},
        )
    )
    assert job.status == "failed"
    assert job.error is not None and job.error["code"] == "lyrics_failed"
    assert "lyrics replica died" in job.error["message"]
    assert len(handles["lyrics"].write.calls) == 2
    assert not handles["router"].generate.calls


@pytest.mark.parametrize("variations", [1])
def test_a_render_surviving_an_earlier_claim_is_mastered_not_rendered(
    tmp_path: Path, variations: int
) -> None:
    """A conductor died after the render was stored: the next claim masters the stored render."""

    async def scenario() -> tuple[JobRecord, dict[str, FakeHandle]]:
        config = config_for(tmp_path)
        store = SQLiteJobStore(config.storage.database_path)
        objects = FilesystemObjectStore(config.storage.storage_path)
        job, _ = await store.create_job(
            owner="o",
            request={"lyrics": "[verse]\nx", "style": "pop", "duration_s": 5.0,
                     "language": "en", "instrumental": False, "model": "auto",
                     "loudness_lufs": -14.0},
            seed=1,
            variations=variations,
        )  # fmt: skip
        # What the dead conductor left: a claim, a stored render, its reference.
        claimed = await store.claim_next("dead", lease_s=0.05, max_attempts=3)
        assert claimed is not None and claimed.lease_token is not None
        graph = Graph(objects)
        tags = StyleTags(genre="pop", subgenre=None, family="pop")
        request = RenderRequest(job.id, 0, 1, 5.0, tags, [], False, "en")
        items = [item async for item in graph.generate(request, "auto")]
        rendered = items[-1]
        assert isinstance(rendered, RenderedSong)
        await store.update_variation(
            job.id, 0, claimed.lease_token, status="running", render={"raw": asdict(rendered)}
        )
        await asyncio.sleep(0.1)  # the lease expires
        finished, _, handles, _ = await run_song_on(store, config, graph, job.id)
        return finished, handles

    job, handles = asyncio.run(scenario())
    assert job.status == "succeeded", job.error
    assert job.attempts == 2
    assert not handles["router"].generate.calls
    assert len(handles["postprocessor"].process.calls) == 1


async def run_song_on(
    store: SQLiteJobStore, config: AppConfig, graph: Graph, job_id: str
) -> tuple[JobRecord, Graph, dict[str, FakeHandle], SQLiteJobStore]:
    handles = {
        "lyrics": FakeHandle(write=graph.write),
        "tags": FakeHandle(normalize=graph.normalize),
        "router": FakeHandle(generate=graph.generate),
        "postprocessor": FakeHandle(process=graph.process),
    }
    conductor = Conductor(config, **handles)
    try:
        deadline = time.monotonic() + 20
        while True:
            current = await store.get_job(job_id)
            assert current is not None
            if current.is_terminal:
                return current, graph, handles, store
            assert time.monotonic() < deadline, f"the song did not finish: {current}"
            await asyncio.sleep(0.05)
    finally:
        await conductor.__del__()


def test_a_full_conductor_waits_instead_of_spinning_over_a_backlog(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Songs queued beyond a conductor's `max_concurrent_jobs`: SQLite keeps answering "there is
    runnable work", which this replica cannot take. It must wait for a free slot (or the poll
    interval), not look again at once: a loop that does burns a core while songs wait."""
    config = config_for(tmp_path, max_concurrent_jobs=1, poll_interval_s=0.1)
    store = SQLiteJobStore(config.storage.database_path)
    graph = Graph(FilesystemObjectStore(config.storage.storage_path))
    hold = asyncio.Event()
    looks: list[str] = []
    for name in ("claim_next", "wait_for_work"):
        original = getattr(SQLiteJobStore, name)

        def counted(
            self: Any, *args: Any, _original: Any = original, _name: str = name, **kwargs: Any
        ) -> Any:
            looks.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(SQLiteJobStore, name, counted)

    async def held_render(request: RenderRequest, model: str) -> AsyncIterator[Any]:
        await hold.wait()  # the first song keeps the replica's only slot
        async for item in graph.generate(request, model):
            yield item

    async def scenario() -> int:
        for seed in range(4):
            await store.create_job(owner="o", request=_BODY, seed=seed, variations=1)
        handles = {
            "lyrics": FakeHandle(write=graph.write),
            "tags": FakeHandle(normalize=graph.normalize),
            "router": FakeHandle(generate=held_render),
            "postprocessor": FakeHandle(process=graph.process),
        }
        conductor = Conductor(config, **handles)
        try:
            await asyncio.sleep(0.5)  # settle: the first song is claimed and held
            looks.clear()
            await asyncio.sleep(1.0)
            return len(looks)
        finally:
            hold.set()
            await conductor.__del__()

    looked = asyncio.run(scenario())
    # About one look per poll interval (10 in the second); a spinning loop makes thousands.
    assert looked <= 25, looked


_BODY = {
    "prompt": "a song about tests",
    "duration_s": 5.0,
    "language": "en",
    "instrumental": False,
    "model": "auto",
    "loudness_lufs": -14.0,
}


async def _cancel_a_rendering_song(tmp_path: Path, *, stop_directly: bool) -> dict[str, Any]:
    """A song whose render never ends is canceled in the store while it renders; with
    `stop_directly` the API's nudge (`Conductor.stop`) follows, otherwise only the lease tells.
    Returns what happened within a few seconds."""
    config = config_for(tmp_path, lease_s=5.0, heartbeat_s=0.5)
    store = SQLiteJobStore(config.storage.database_path)
    graph = Graph(FilesystemObjectStore(config.storage.storage_path))
    rendering = asyncio.Event()

    async def endless_render(request: RenderRequest, model: str) -> AsyncIterator[Any]:
        yield RenderProgress(1, 100)
        rendering.set()
        await asyncio.Event().wait()  # a long render: only cancellation ends it
        yield None  # pragma: no cover

    handles = {
        "lyrics": FakeHandle(write=graph.write),
        "tags": FakeHandle(normalize=graph.normalize),
        "router": FakeHandle(generate=endless_render),
        "postprocessor": FakeHandle(process=graph.process),
    }
    job, _ = await store.create_job(owner="o", request=_BODY, seed=1, variations=2)
    conductor = Conductor(config, **handles)
    try:
        await asyncio.wait_for(rendering.wait(), 10)
        canceled_at = time.monotonic()
        record = await store.cancel_job(job.id)
        assert record is not None and record.status == "canceled"
        if stop_directly:
            await conductor.stop(job.id)
        streams = handles["router"].generate.streams
        while not all(s.cancelled for s in streams) and time.monotonic() - canceled_at < 5:
            await asyncio.sleep(0.02)
        stopped_after_s = time.monotonic() - canceled_at
        while conductor._song_runner.driving(job.id) and time.monotonic() - canceled_at < 5:
            await asyncio.sleep(0.02)
        driving = conductor._song_runner.driving(job.id)
    finally:
        await conductor.__del__()
    final = await store.get_job(job.id)
    events = await store.events_after(job.id, 0)
    return {
        "streams": streams,
        "stopped_after_s": stopped_after_s,
        "driving": driving,
        "job": final,
        "events": [e.type for e in events],
    }


@pytest.mark.parametrize("stop_directly", [True, False], ids=["stop-nudge", "lease-only"])
def test_a_canceled_song_stops_its_renders_and_ends_canceled(
    tmp_path: Path, stop_directly: bool
) -> None:
    seen = asyncio.run(_cancel_a_rendering_song(tmp_path, stop_directly=stop_directly))
    # Both variations' render calls were cancelled (Serve passes that on to the decoder)...
    assert len(seen["streams"]) == 2
    assert all(stream.cancelled for stream in seen["streams"])
    # ...at once with the nudge, by the next lease renewal (heartbeat 0.5 s) without it.
    assert seen["stopped_after_s"] < (1.0 if stop_directly else 2.5)
    assert not seen["driving"]
    job = seen["job"]
    assert job.status == "canceled" and job.stage == "canceled"
    assert [v.status for v in job.variations] == ["canceled", "canceled"]
    # The log ends with the one `canceled` event: the conductor wrote nothing after it.
    assert seen["events"][-1] == "canceled"
    assert seen["events"].count("canceled") == 1
    assert "error" not in seen["events"] and "done" not in seen["events"]
