"""Song edits (extend, repaint, cover) and reference audio: the API's checks, each a 422 naming
its field before any work, what it stores for the render, and the sketch model's exact edits
(outside the window the samples are the source's, bit for bit)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from deployments.song_stages import render_request_of, song_provenance
from pipeline.editing import splice_window, window_samples
from pipeline.engines.sketch import SketchSongModel
from pipeline.lyrics import LyricSection
from pipeline.song_contracts import EXTEND, REPAINT
from pipeline.song_models import RenderRequest, SongEdit
from pipeline.tags import normalize_style
from serve.config import resolve_config
from serve.http.auth import LOCAL_OWNER
from serve.services import ApiServices
from serve.store import raw_render_key
from tests.http_graph import api_client

SR = 48_000


def _api(tmp_path: Path, **config: Any) -> tuple[Any, ApiServices]:
    return api_client(resolve_config({"storage": {"data_dir": str(tmp_path)}, **config}))


def _finished_song(
    services: ApiServices, duration_s: float = 10.0, owner: str = LOCAL_OWNER
) -> str:
    """A succeeded one-variation sketch song in the store, its raw render kept."""

    async def make() -> str:
        job, _ = await services.jobs.create_job(
            owner=owner, request={"prompt": "p", "title": "Summer"}, seed=1, variations=1
        )
        claimed = await services.jobs.claim_next("test", lease_s=30, max_attempts=3)
        assert claimed is not None and claimed.lease_token
        key = raw_render_key(job.id, 0)
        await services.jobs.update_variation(
            job.id,
            0,
            claimed.lease_token,
            status="succeeded",
            model="sketch",
            duration_s=duration_s,
            objects={"m4a": f"songs/{job.id}/0/audio.m4a"},
            render={"raw": {"render_key": key}},
        )
        await services.jobs.update_job(job.id, claimed.lease_token, status="succeeded")
        return job.id

    return asyncio.run(make())


def _with_ace_step(tmp_path: Path) -> dict[str, Any]:
    """A sketch pool and an ACE-Step pool (never loaded here: no decoder runs in these tests)."""
    return {
        "pools": [
            {"name": "Sketch", "model": "sketch"},
            {"name": "DiT", "model": "ace-step", "ace_step": {"path": str(tmp_path)}},
        ]
    }


def _post(client: Any, **body: Any) -> Any:
    return client.post("/v1/songs", json={"style": "synthwave", **body})


def _error(response: Any) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["field"]


def test_an_extend_is_stored_with_its_resolved_source(tmp_path: Path) -> None:
    client, services = _api(tmp_path)
    source = _finished_song(services, duration_s=10.0)
    accepted = _post(client, task="extend", source={"song": source}, extend_s=20)
    assert accepted.status_code == 202, accepted.text
    job = asyncio.run(services.jobs.get_job(accepted.json()["id"]))
    assert job is not None
    assert job.request["duration_s"] == 30.0  # the source's 10 s and 20 more
    edit = job.request["edit"]
    assert edit["task"] == "extend" and edit["source_key"] == raw_render_key(source, 0)
    assert (edit["start_s"], edit["end_s"]) == (10.0, 30.0)
    assert edit["ingredient_key"] == f"songs/{source}/0/audio.m4a"
    # The song records its parent as the caller named it (and not the internals).
    shown = client.get(f"/v1/songs/{job.id}").json()["request"]
    assert shown["task"] == "extend" and shown["source"] == {"song": source, "variation": 0}
    assert shown["extend_s"] == 20 and "edit" not in shown
    # What the conductor asks the decoder for, and what the manifest will say.
    render = render_request_of(job, job.variations[0], [], normalize_style("synthwave"))
    assert render.edit == SongEdit(EXTEND, raw_render_key(source, 0), 10.0, 10.0, 30.0)
    provenance = song_provenance(job.id, 0, 1, job.request)
    assert provenance.edit == "extend"
    assert provenance.source == f"songserve:song/{source}/variation/0"
    assert provenance.source_key == f"songs/{source}/0/audio.m4a"


def test_a_repaint_keeps_the_source_length(tmp_path: Path) -> None:
    client, services = _api(tmp_path)
    source = _finished_song(services, duration_s=12.0)
    accepted = _post(
        client,
        task="repaint",
        source={"song": source, "variation": 0},
        window={"start_s": 4, "end_s": 8},
        lyrics="[verse]\nnew words here",
    )
    assert accepted.status_code == 202, accepted.text
    job = asyncio.run(services.jobs.get_job(accepted.json()["id"]))
    assert job is not None and job.request["duration_s"] == 12.0
    assert (job.request["edit"]["start_s"], job.request["edit"]["end_s"]) == (4, 8)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"task": "extend"}, "source"),
        ({"task": "extend", "source": {"song": "SRC"}}, "extend_s"),
        ({"task": "extend", "source": {"song": "SRC"}, "extend_s": 595}, "extend_s"),
        (
            {"task": "extend", "source": {"song": "SRC"}, "extend_s": 5, "duration_s": 40},
            "duration_s",
        ),
        ({"task": "repaint", "source": {"song": "SRC"}}, "window"),
        (
            {"task": "repaint", "source": {"song": "SRC"}, "window": {"start_s": 2, "end_s": 30}},
            "window",
        ),
        (
            {"task": "repaint", "source": {"song": "SRC"}, "window": {"start_s": 2, "end_s": 2.5}},
            "window",
        ),
        (
            {
                "task": "extend",
                "source": {"song": "SRC"},
                "extend_s": 5,
                "window": {"start_s": 0, "end_s": 2},
            },
            "window",
        ),
        ({"source": {"song": "SRC"}}, "source"),
        ({"task": "extend", "source": {"song": "nope"}, "extend_s": 5}, "source.song"),
        (
            {"task": "extend", "source": {"song": "SRC", "variation": 1}, "extend_s": 5},
            "source.variation",
        ),
        ({"task": "extend", "source": {"song": "SRC", "upload": "u"}, "extend_s": 5}, "source"),
        ({"task": "extend", "source": {}, "extend_s": 5}, "source"),
        # The sketch model cannot cover, nor take reference audio: said before any work.
        ({"task": "cover", "source": {"song": "SRC"}, "model": "sketch"}, "task"),
        ({"task": "cover", "source": {"song": "SRC"}}, "task"),
        ({"reference_audio": {"song": "SRC"}}, "reference_audio"),
        ({"task": "dance", "source": {"song": "SRC"}}, "task"),
    ],
)
def test_bad_edits_are_422s_naming_the_field(
    tmp_path: Path, body: dict[str, Any], field: str
) -> None:
    client, services = _api(tmp_path)
    source = _finished_song(services, duration_s=10.0)

    def filled(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: filled(v) for k, v in value.items()}
        return source if value == "SRC" else value

    refused = _post(client, **filled(body))
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["field"].split(".")[-len(field.split(".")) :] == field.split(".")
    assert asyncio.run(services.jobs.count_jobs("queued")) == 0


def test_another_owners_song_is_no_source(tmp_path: Path) -> None:
    client, services = _api(tmp_path)
    foreign = _finished_song(services, owner="own_someone_else")
    refused = _post(client, task="extend", source={"song": foreign}, extend_s=5)
    assert _error(refused) == (422, "source.song")
    assert refused.json()["error"]["message"] == f"no song with id {foreign!r}"  # as if absent


def test_a_model_that_can_edit_is_named_when_one_cannot(tmp_path: Path) -> None:
    client, services = _api(
        tmp_path,
        models=_with_ace_step(tmp_path),
    )
    source = _finished_song(services)
    refused = _post(client, task="cover", source={"song": source}, model="sketch")
    assert _error(refused) == (422, "task")
    assert "use one of: ace-step" in refused.json()["error"]["message"]
    accepted = _post(client, task="cover", source={"song": source}, cover_strength=0.5)
    assert accepted.status_code == 202, accepted.text


# -- the sketch model's exact edits --------------------------------------------------------------


def _sketch_request(duration_s: float, edit: SongEdit | None, source: np.ndarray | None) -> Any:
    return RenderRequest(
        job_id="j",
        variation=0,
        seed=7,
        duration_s=duration_s,
        tags=normalize_style("funk with slap bass"),
        sections=[LyricSection("verse", ["a line to sing"]), LyricSection("chorus", ["la la"])],
        instrumental=False,
        language="en",
        edit=edit,
        source_audio=source,
    )


def test_sketch_extends_keeping_the_source_exactly() -> None:
    model = SketchSongModel()
    source = model.render([_sketch_request(6.0, None, None)], lambda s, n: None)[0]
    edit = SongEdit(EXTEND, "k", 6.0, start_s=6.0, end_s=10.0)
    [extended] = model.render([_sketch_request(10.0, edit, source)], lambda s, n: None)
    assert extended.shape == (2, 10 * SR)
    np.testing.assert_array_equal(extended[:, : 6 * SR], source)  # bit for bit
    assert np.abs(extended[:, 7 * SR :]).max() > 0.01  # new music after it
    # No click at the join: the first new sample continues from the source's last.
    join = np.abs(extended[:, 6 * SR] - source[:, -1]).max()
    typical = np.abs(np.diff(extended[:, 6 * SR : 7 * SR], axis=1)).max()
    assert join <= typical + 1e-6


def test_sketch_repaints_only_the_window() -> None:
    model = SketchSongModel()
    source = model.render([_sketch_request(8.0, None, None)], lambda s, n: None)[0]
    edit = SongEdit(REPAINT, "k", 8.0, start_s=2.0, end_s=5.0)
    request = _sketch_request(8.0, edit, source)
    request = RenderRequest(**{**request.__dict__, "seed": 99})  # something else in the window
    [repainted] = model.render([request], lambda s, n: None)
    assert repainted.shape == source.shape
    np.testing.assert_array_equal(repainted[:, : 2 * SR], source[:, : 2 * SR])
    np.testing.assert_array_equal(repainted[:, 5 * SR :], source[:, 5 * SR :])
    assert not np.array_equal(repainted[:, 3 * SR : 4 * SR], source[:, 3 * SR : 4 * SR])


def test_sketch_refuses_what_it_cannot_do() -> None:
    model = SketchSongModel()
    with pytest.raises(ValueError, match="needs its source audio"):
        model.render([_sketch_request(4.0, SongEdit(EXTEND, "k", 2.0, 2.0, 4.0), None)], print)
    source = np.zeros((2, 4 * SR), dtype=np.float32)
    with pytest.raises(ValueError, match="cannot cover"):
        model.render([_sketch_request(4.0, SongEdit("cover", "k", 4.0), source)], print)


def test_splice_window_crossfades_inside_the_window_only() -> None:
    rng = np.random.default_rng(0)
    source = rng.standard_normal((2, SR)).astype(np.float32)
    rendered = rng.standard_normal((2, SR)).astype(np.float32)
    start, end = window_samples(0.25, 0.75, SR, SR)
    out = splice_window(source, rendered, start, end, SR, crossfade_s=0.05)
    np.testing.assert_array_equal(out[:, :start], source[:, :start])
    np.testing.assert_array_equal(out[:, end:], source[:, end:])
    fade = round(0.05 * SR)
    np.testing.assert_array_equal(
        out[:, start + fade : end - fade], rendered[:, start + fade : end - fade]
    )
    with pytest.raises(ValueError, match="outside the song"):
        splice_window(source, rendered, 10, SR + 1, SR)


def test_an_upload_is_a_source_and_a_reference(tmp_path: Path) -> None:
    from pipeline.encode import encode_audio

    client, services = _api(
        tmp_path,
        models=_with_ace_step(tmp_path),
    )
    tone = (0.2 * np.sin(np.arange(3 * 44_100) / 44_100 * 2 * np.pi * 220))[None, :]
    data = encode_audio(tone.astype(np.float32), 44_100, "wav")
    upload = client.post("/v1/uploads", files={"file": ("demo.wav", data)}).json()
    accepted = _post(
        client,
        task="extend",
        source={"upload": upload["id"]},
        extend_s=5,
        reference_audio={"upload": upload["id"]},
    )
    assert accepted.status_code == 202, accepted.text
    job = asyncio.run(services.jobs.get_job(accepted.json()["id"]))
    assert job is not None and job.request["duration_s"] == pytest.approx(8.0)
    source = asyncio.run(services.uploads.source(LOCAL_OWNER, upload["id"], "source.upload"))
    assert job.request["edit"]["source_key"] == source.key
    assert job.request["edit"]["ingredient_key"] == source.original_key  # the file as sent
    assert job.request["reference"] == {"key": source.key}
    assert job.request["source"] == {"upload": upload["id"]}
    render = render_request_of(job, job.variations[0], [], normalize_style("synthwave"))
    assert render.reference_key == source.key and render.task == "extend"
    assert song_provenance(job.id, 0, 1, job.request).source == f"songserve:upload/{upload['id']}"

    # The sketch model takes no reference; an unknown upload is named as such.
    refused = _post(client, model="sketch", reference_audio={"upload": upload["id"]})
    assert _error(refused) == (422, "reference_audio")
    missing = _post(client, task="extend", source={"upload": "upl_nope"}, extend_s=5)
    assert _error(missing) == (422, "source.upload")


def test_a_pool_serves_what_its_tasks_say(tmp_path: Path) -> None:
    from serve.config import DecoderPoolConfig, ModelsConfig

    with pytest.raises(ValueError, match=r"models\.pools\[Sketch\]\.tasks: sketch cannot cover"):
        DecoderPoolConfig.model_validate({"name": "Sketch", "model": "sketch", "tasks": ["cover"]})
    turbo = {
        "name": "DiT_Turbo",
        "model": "ace-step",
        "ace_step": {"path": str(tmp_path)},
        "tasks": ["text2music", "extend", "repaint"],
    }
    models = ModelsConfig.model_validate({"pools": [turbo]})
    assert models.serves("ace-step", "repaint") and not models.serves("ace-step", "cover")
    client, services = _api(tmp_path, models={"auto_order": ["ace-step"], "pools": [turbo]})
    source = _finished_song(services)
    refused = _post(client, task="cover", source={"song": source}, model="ace-step")
    assert _error(refused) == (422, "task")
    assert _error(_post(client, task="cover", source={"song": source})) == (422, "task")
    accepted = _post(
        client, task="repaint", source={"song": source}, window={"start_s": 1, "end_s": 3}
    )
    assert accepted.status_code == 202, accepted.text


def test_pools_say_what_they_serve(tmp_path: Path) -> None:
    """GET /v1/pools lists each pool's tasks and capabilities (the studio offers only the edits
    some pool can make)."""
    turbo = {**_with_ace_step(tmp_path)["pools"][1], "tasks": ["text2music", "extend", "repaint"]}
    client, _ = _api(tmp_path, models={"pools": [{"name": "Sketch", "model": "sketch"}, turbo]})
    pools = {p["name"]: p for p in client.get("/v1/pools").json()["pools"]}
    assert pools["Sketch"]["tasks"] == ["extend", "repaint", "text2music"]
    assert (pools["Sketch"]["loras"], pools["Sketch"]["reference_audio"]) == (False, False)
    assert pools["DiT"]["tasks"] == ["extend", "repaint", "text2music"]  # no cover: turbo
    assert (pools["DiT"]["loras"], pools["DiT"]["reference_audio"]) == (True, True)
