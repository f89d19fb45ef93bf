"""The deployment graph on a real local Ray: concurrency, SSE, determinism, resume."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from ray import serve

from pipeline.encode import decode_audio
from tests.helpers import QUICK_RESTART, read_events, wait_for_song

from .conftest import APP_NAME, Deployed, kill_replicas

pytestmark = pytest.mark.integration

DeployFn = Callable[..., Deployed]


@pytest.fixture(scope="module")
def app(module_deploy: DeployFn) -> Deployed:
    """The test defaults (two decoder and two post-processor replicas), deployed once for the
    tests that need nothing else: each waits for its own songs, with seeds and an idempotency
    key of its own. (A start of the whole graph costs ~10 s of both cores.)"""
    return module_deploy()


def _overlap_s(first: dict, second: dict) -> float:
    """Seconds during which two renders were both running."""
    return min(first["render_finished_at"], second["render_finished_at"]) - max(
        first["render_started_at"], second["render_started_at"]
    )


def _render_s(render: dict) -> float:
    return float(render["render_finished_at"] - render["render_started_at"])


def test_two_songs_at_once(app: Deployed) -> None:
    bodies = [
        {"prompt": "a sunny indie-pop song about sailing home", "duration_s": 12, "seed": 1},
        {
            "style": "dark techno, driving, 128 bpm",
            "instrumental": True,
            "duration_s": 12,
            "seed": 2,
        },
    ]
    with ThreadPoolExecutor(2) as pool:
        accepted = list(pool.map(lambda b: app.client.post("/v1/songs", json=b), bodies))
    assert [r.status_code for r in accepted] == [202, 202]
    songs = [wait_for_song(app.client, r.json()["id"]) for r in accepted]
    for song in songs:
        assert song["status"] == "succeeded", song
        assert [v["status"] for v in song["variations"]] == ["succeeded", "succeeded"]
        assert all(v["model"] == "sketch" for v in song["variations"])
    assert songs[0]["tags"]["genre"] != songs[1]["tags"]["genre"]
    assert songs[1]["lyrics"] == ""  # instrumental: no lyrics were written

    # Four renders shared the two decoder replicas: both were used, and renders ran side by side.
    renders = [v.render for song in songs for v in app.job(song["id"]).variations]
    assert len({r["replica"] for r in renders}) == 2
    assert max(_overlap_s(a, b) for i, a in enumerate(renders) for b in renders[i + 1 :]) > 0


def test_variations_render_in_parallel_on_different_replicas(app: Deployed) -> None:
    song_id = app.client.post(
        "/v1/songs", json={"style": "rock anthem", "duration_s": 40, "seed": 3}
    ).json()["id"]
    assert wait_for_song(app.client, song_id)["status"] == "succeeded"
    first, second = (v.render for v in app.job(song_id).variations)
    assert first["replica"] != second["replica"]
    assert _overlap_s(first, second) > 0.5 * min(_render_s(first), _render_s(second))


def test_sse_order_and_replay_for_late_subscribers(app: Deployed) -> None:
    song_id = app.client.post(
        "/v1/songs", json={"prompt": "rain on the harbour at night", "duration_s": 8, "seed": 5}
    ).json()["id"]
    live = read_events(app.client, song_id)
    types = [event_type for _, event_type, _ in live]

    assert [seq for seq, _, _ in live] == list(range(1, len(live) + 1))  # dense, ordered ids
    stages = [data["stage"] for _, t, data in live if t == "stage"]
    assert stages == ["queued", "lyrics", "tags", "generating"]
    assert types[-1] == "done" and types.count("done") == 1
    assert types.count("variation") == 2
    assert types.index("variation") > types.index("progress")

    # Progress carries renderer steps, per variation, in order, and the bar never goes back.
    for variation in (0, 1):
        steps = [
            (d["step"], d["steps"])
            for _, t, d in live
            if t == "progress" and d["variation"] == variation and d["stage"] == "generating"
        ]
        assert steps and steps[-1][0] == steps[-1][1] and steps[-1][1] >= 4
        assert [s for s, _ in steps] == sorted(s for s, _ in steps)
    overall = [d["progress"] for _, t, d in live if t == "progress"]
    assert overall == sorted(overall) and 0 < overall[-1] < 1

    finished = [d for _, t, d in live if t == "variation"]
    assert {v["index"] for v in finished} == {0, 1}
    assert all(v["status"] == "succeeded" and "m4a" in v["audio"] for v in finished)

    # A late subscriber gets the whole story; one resuming with Last-Event-ID gets the rest.
    assert read_events(app.client, song_id) == live
    assert read_events(app.client, song_id, last_event_id=live[-3][0]) == live[-2:]


def test_seeds_make_variations_differ_and_reruns_identical(app: Deployed) -> None:
    body = {
        "style": "acoustic folk, warm",
        "lyrics": "[verse]\nfields of gold\n[chorus]\nhome",
        "duration_s": 6,
        "seed": 42,
    }
    ids = [app.client.post("/v1/songs", json=body).json()["id"] for _ in range(2)]
    songs = [wait_for_song(app.client, song_id) for song_id in ids]
    # Decoded samples: each file's C2PA manifest (job id, time) is unique to its song.
    audio = [
        [decode_audio(app.client.get(v["audio"]["wav"]).content)[0].tobytes()
         for v in song["variations"]]
        for song in songs
    ]  # fmt: skip
    assert [v["seed"] for v in songs[0]["variations"]] == [42, 43]
    assert audio[0][0] != audio[0][1]  # variations differ
    assert audio[0] == audio[1]  # the same seed gives the same songs, sample for sample


def test_idempotency_key_returns_the_same_job(app: Deployed) -> None:
    body = {"style": "lofi hip hop", "duration_s": 5, "variations": 1}
    headers = {"Idempotency-Key": "retry-123"}
    first = app.client.post("/v1/songs", json=body, headers=headers)
    again = app.client.post("/v1/songs", json=body, headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    conflict = app.client.post("/v1/songs", json={**body, "duration_s": 6}, headers=headers)
    reseeded = app.client.post("/v1/songs", json={**body, "seed": 7}, headers=headers)
    assert reseeded.status_code == 409  # an explicit, different seed is a different request
    assert conflict.status_code == 409
    assert conflict.json()["error"]["field"] == "Idempotency-Key"
    wait_for_song(app.client, first.json()["id"])


_ONE_DECODER = {
    "pools": [
        {
            "name": "Sketch",
            "model": "sketch",
            "deployment": {
                "num_replicas": 1,
                "max_ongoing_requests": 1,
                "actor": {"num_cpus": 0.5},
            },
        }
    ]
}


def _start_song_and_wait_for_first_variation(app: Deployed) -> tuple[str, dict[int, dict]]:
    """A 2-variation song on one decoder replica, so the variations render one after the other;
    returns once the first is stored, while the second renders."""
    song_id = app.client.post(
        "/v1/songs", json={"style": "synthwave", "instrumental": True, "duration_s": 120, "seed": 9}
    ).json()["id"]
    deadline = time.monotonic() + 120
    while True:
        job = app.job(song_id)
        done = {v.index: v.render for v in job.variations if v.status == "succeeded"}
        if done:
            assert len(done) == 1 and job.status == "running"
            return song_id, done
        assert time.monotonic() < deadline
        time.sleep(0.05)


def _assert_resumed(app: Deployed, song_id: str, done_before: dict[int, dict]) -> None:
    song = wait_for_song(app.client, song_id, timeout_s=180)
    assert song["status"] == "succeeded", song
    resumed = app.job(song_id)
    assert resumed.attempts == 2  # taken over once, after its lease expired
    for index, render in done_before.items():
        assert resumed.variations[index].render == render  # a finished variation is not redone
    assert all(v.status == "succeeded" for v in resumed.variations)
    events = read_events(app.client, song_id)
    assert events[-1][1] == "done"
    assert [t for _, t, _ in events].count("variation") == 2


def test_a_job_survives_its_conductor_dying(deploy: DeployFn) -> None:
    app = deploy(models=_ONE_DECODER, deployments={"conductor": QUICK_RESTART})
    song_id, done_before = _start_song_and_wait_for_first_variation(app)
    assert kill_replicas("Conductor") == 1  # Serve replaces the replica; the job must go on
    _assert_resumed(app, song_id, done_before)


def test_unfinished_jobs_resume_when_the_app_restarts(deploy: DeployFn) -> None:
    app = deploy(models=_ONE_DECODER)
    song_id, done_before = _start_song_and_wait_for_first_variation(app)
    assert kill_replicas("Conductor") == 1
    serve.delete(APP_NAME)  # the whole graph goes away with the job unfinished
    stranded = app.job(song_id)
    assert stranded.status == "running" and stranded.attempts == 1

    app = deploy(models=_ONE_DECODER)  # a fresh graph on the same stores picks it up on start-up
    _assert_resumed(app, song_id, done_before)


def test_a_redeploy_hands_running_jobs_over_without_waiting_for_the_lease(
    deploy: DeployFn,
) -> None:
    # A long lease: only an explicit hand-over lets the new conductor take the job at once.
    app = deploy(models=_ONE_DECODER, jobs={"lease_s": 60.0})
    song_id, done_before = _start_song_and_wait_for_first_variation(app)
    # New conductor options: Serve replaces the Conductor replica, gracefully.
    app = deploy(models=_ONE_DECODER, jobs={"lease_s": 60.0, "max_concurrent_jobs": 7})
    song = wait_for_song(app.client, song_id, timeout_s=50)  # well inside the 60 s lease
    assert song["status"] == "succeeded", song
    resumed = app.job(song_id)
    assert resumed.attempts == 1  # a clean hand-over is not a failed attempt
    for index, render in done_before.items():
        assert resumed.variations[index].render == render
