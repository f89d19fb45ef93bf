"""What the fault tests (tests/integration/test_faults.py) found, pinned down without Ray.

A conductor records a finished variation and logs its `variation` event in two writes. When it
dies (a crash, or a lease lost to another conductor after a database outage) between the two,
the next claim finds the variation `succeeded` and must still log its event, exactly once:
SSE clients learn of a variation only from that event.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from pathlib import Path

import pytest

from deployments.renders import RenderedSong
from pipeline.song_models import RenderRequest
from pipeline.tags import StyleTags
from serve.store.files import FilesystemObjectStore
from serve.store.sqlite import SQLiteJobStore

from .test_conductor import Graph, config_for, run_song_on

# Serve awaits the conductor's async __del__; the garbage collector of a test process cannot.
pytestmark = pytest.mark.filterwarnings("ignore:coroutine 'Conductor.__del__' was never awaited")


def test_a_variation_finished_by_a_dead_claim_is_announced_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        config = config_for(tmp_path)
        store = SQLiteJobStore(config.storage.database_path)
        graph = Graph(FilesystemObjectStore(config.storage.storage_path))
        job, _ = await store.create_job(
            owner="o",
            request={"lyrics": "[verse]\nx", "style": "pop", "duration_s": 5.0,
                     "language": "en", "instrumental": False, "model": "auto",
                     "loudness_lufs": -14.0},
            seed=1,
            variations=2,
        )  # fmt: skip
        # The dead claim: variation 0 rendered, mastered and recorded `succeeded`, and then the
        # conductor died before it logged the variation's event.
        claimed = await store.claim_next("dead", lease_s=0.05, max_attempts=3)
        assert claimed is not None and claimed.lease_token is not None
        tags = StyleTags(genre="pop", subgenre=None, family="pop")
        request = RenderRequest(job.id, 0, 1, 5.0, tags, [], False, "en")
        rendered = [item async for item in graph.generate(request, "auto")][-1]
        assert isinstance(rendered, RenderedSong)
        processed = await graph.process(rendered, job_id=job.id, index=0)
        await store.update_variation(
            job.id,
            0,
            claimed.lease_token,
            status="succeeded",
            model="fake",
            objects=processed.objects,
            render={"raw": asdict(rendered)},
        )
        await asyncio.sleep(0.1)  # its lease expires

        finished, _, handles, _ = await run_song_on(store, config, graph, job.id)
        assert finished.status == "succeeded", finished.error
        assert finished.attempts == 2
        # Variation 0 is not made again, and it is announced: one event per variation.
        assert [call[0][0].variation for call in handles["router"].generate.calls] == [1]
        events = await store.events_after(job.id, 0)
        announced = sorted(e.data["index"] for e in events if e.type == "variation")
        assert announced == [0, 1]
        assert events[-1].type == "done"

    asyncio.run(scenario())


def test_an_sse_stream_waits_through_a_store_outage(tmp_path: Path) -> None:
    """The database restarts under an open stream: the stream stays connected (a comment line),
    then carries on with the events after the last one it sent."""
    from serve.config import resolve_config
    from serve.http.auth import LOCAL_OWNER
    from serve.store import StoreUnavailable
    from tests.http_graph import api_services

    async def scenario() -> list[str]:
        config = resolve_config(
            {"storage": {"data_dir": str(tmp_path)}, "api": {"sse_keepalive_s": 0.2}}
        )
        api = api_services(config)
        job, _ = await api.jobs.create_job(owner=LOCAL_OWNER, request={}, seed=1, variations=1)
        real_wait = api.jobs.wait_for_events
        outages = iter([True, False])

        async def flaky_wait(job_id: str, after: int, timeout: float) -> list:
            if next(outages, False):
                raise StoreUnavailable("the database restarts")
            return await real_wait(job_id, after, timeout)

        api.jobs.wait_for_events = flaky_wait  # type: ignore[method-assign]
        frames = []
        stream = await api.events.open(job.id, LOCAL_OWNER, 0)
        async for frame in stream:
            frames.append(frame)
            if frame.startswith("id: 1\n"):
                break
        return frames

    # The song is queued: its place in line (`queue`, not in the log) is told on opening.
    frames = asyncio.run(scenario())
    assert frames.pop(1).startswith("event: queue\ndata: {")
    assert frames[0].startswith("retry:")
    assert frames[1].startswith(": the job store is unavailable")
    assert frames[2].startswith("id: 1\nevent: stage\n")  # the queued event, after the outage
