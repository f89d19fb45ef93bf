"""A queued song's expected start counts only the pools that would render it: for `model: auto`,
the first model of the auto order with a pool that serves the song's task (and takes the song's
LoRA or timbre reference, if it brings one), as the router routes."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from serve.config import resolve_config
from serve.queue_estimate import QueueEstimator
from serve.services import build_services
from serve.store.sqlite import SQLiteJobStore


def _config() -> object:
    def pool(name: str, model: str, replicas: int, speed: float, **extra: object) -> dict:
        return {
            "name": name,
            "model": model,
            "expected_render_s_per_audio_s": speed,
            "deployment": {
                "num_replicas": replicas,
                "max_ongoing_requests": 1,
                "actor": {"num_gpus": 0},
            },
            **extra,
        }

    return resolve_config(
        {
            "models": {
                "auto_order": ["sketch", "ace-step"],
                "pools": [
                    # The sketch serves text2music, extend and repaint; this pool only the first.
                    pool("Sketch", "sketch", 1, 0.5, tasks=["text2music"]),
                    pool("DiT", "ace-step", 4, 0.1, ace_step={"path": "/models/acestep"}),
                ],
            }
        }
    )


def _expected_starts(
    tmp_path: Path, songs: dict[str, dict[str, object]]
) -> dict[str, float | None]:
    """Queue one song of 2 × 30 s (60 s of audio ahead of everything), then each of `songs` (a
    30 s `auto` song with those request fields) in turn; each one's expected start."""

    async def scenario() -> dict[str, float | None]:
        store = SQLiteJobStore(tmp_path / "jobs.sqlite3")
        estimator = QueueEstimator(_config(), store, graph=None)  # type: ignore[arg-type]
        starts: dict[str, float | None] = {}
        ahead = {"prompt": "x", "duration_s": 30, "model": "auto"}
        await store.create_job(owner="a", request=ahead, seed=1, variations=2)
        for name, fields in songs.items():
            job, _ = await store.create_job(
                owner="a", request={**ahead, **fields}, seed=2, variations=1
            )
            queued = await estimator.queue_out(job.id, job.request)
            assert queued is not None
            starts[name] = queued.expected_start_s
        return starts

    return asyncio.run(scenario())


def test_an_auto_song_waits_for_the_pools_that_serve_its_task(tmp_path: Path) -> None:
    starts = _expected_starts(
        tmp_path,
        {
            "text2music": {"edit": None},
            "repaint": {"edit": {"task": "repaint"}},
            "cover": {"edit": {"task": "cover"}},
        },
    )
    # text2music: the Sketch pool (1 replica at 0.5 s per audio second drains 2 audio s/s):
    # the 60 s ahead start it after 30 s.
    assert starts["text2music"] == 30.0
    # Repaint and cover: not the Sketch pool (it serves text2music only) but DiT, 4 replicas at
    # 0.1 s per audio second (40 audio s/s); the audio ahead now includes the earlier edits'.
    assert starts["repaint"] == round((60 + 30) / 40, 1)
    assert starts["cover"] == round((60 + 30 + 30) / 40, 1)


def test_a_song_with_a_lora_or_a_reference_waits_for_the_pools_whose_model_takes_it(
    tmp_path: Path,
) -> None:
    starts = _expected_starts(
        tmp_path,
        {
            "plain": {},
            "lora": {"lora": {"id": "lofi", "ref": "shared/lofi", "scale": 1.0}},
            "reference": {"reference": {"key": "uploads/u1/audio"}},
            "lora given as null": {"lora": None, "reference": None},
        },
    )
    # The sketch (first in auto_order) takes neither: those songs wait for DiT (40 audio s/s),
    # behind the 60 s ahead and the songs queued before them (30 s each).
    assert starts["plain"] == 30.0  # Sketch: 60 s at 2 audio s/s
    assert starts["lora"] == round((60 + 30) / 40, 1)
    assert starts["reference"] == round((60 + 30 + 30) / 40, 1)
    assert starts["lora given as null"] == round((60 + 30 * 3) / 2, 1)  # Sketch again


def test_queued_songs_asking_within_a_second_share_one_read_of_the_line(tmp_path: Path) -> None:
    """A stream per queued song asks every second; one read of every place serves them all
    (statements counted with sqlite3's trace callback on the store's connection)."""

    async def scenario() -> None:
        store = SQLiteJobStore(tmp_path / "jobs.sqlite3")
        estimator = QueueEstimator(_config(), store, graph=None)  # type: ignore[arg-type]
        request = {"prompt": "x", "duration_s": 30, "model": "auto"}
        jobs = [
            (await store.create_job(owner="a", request=request, seed=i, variations=1))[0]
            for i in range(30)
        ]
        statements: list[str] = []

        def trace(db: sqlite3.Connection) -> None:
            db.set_trace_callback(statements.append)

        await store._run_on_db(trace)
        places = [await estimator.queue_out(job.id, job.request) for job in jobs]
        assert [place.position for place in places if place is not None] == list(range(30))
        one_job = [s for s in statements if "AND status = 'queued'" in s]
        whole_line = [s for s in statements if "GROUP BY j.id" in s]
        assert (len(whole_line), len(one_job)) == (1, 0)

        # A song queued since that read is asked about on its own, and is last in line.
        late, _ = await store.create_job(owner="a", request=request, seed=99, variations=1)
        place = await estimator.queue_out(late.id, late.request)
        assert place is not None and place.position == 30
        assert len([s for s in statements if "AND status = 'queued'" in s]) == 1
        await store.close()

    asyncio.run(scenario())


def test_a_queued_songs_stream_reads_its_status_once_not_after_each_look_at_its_place(
    tmp_path: Path,
) -> None:
    """The stream of a queued song looks at its place every second; the song's status (has it
    ended?) is read when the stream opens and after quiet keep-alive waits, not on every look."""
    config = resolve_config({"storage": {"data_dir": str(tmp_path)}})

    async def scenario() -> tuple[int, list[str]]:
        api = build_services(config, graph=None)  # type: ignore[arg-type]
        job, _ = await api.jobs.create_job(
            owner="local", request={"prompt": "x", "duration_s": 30}, seed=1, variations=1
        )
        status_reads = 0
        get_job = api.jobs.get_job

        async def counted_get_job(job_id: str) -> object:
            nonlocal status_reads
            status_reads += 1
            return await get_job(job_id)

        api.jobs.get_job = counted_get_job  # type: ignore[method-assign]
        frames: list[str] = []

        async def follow() -> None:
            async for frame in await api.events.open(job.id, "local", 0):
                frames.append(frame)

        following = asyncio.create_task(follow())
        await asyncio.sleep(3.5)  # three or four looks at its place
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)
        await api.jobs.close()
        return status_reads, frames

    status_reads, frames = asyncio.run(scenario())
    assert any(frame.startswith("event: queue") for frame in frames), frames
    # On opening only: the stream checks the caller owns the song, then whether it has ended
    # (keep-alive is 15 s by default).
    assert status_reads == 2
