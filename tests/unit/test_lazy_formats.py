"""Lazy formats without Ray: `postprocess.eager_formats` validation, what mastering stores (only
the eager formats, plus the kept master and its credentials), and a lazy file made from the
master later — sample-identical to an eager encode and signed with the same credentials."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.responses import RedirectResponse
from pydantic import ValidationError
from ray.serve._private.api import call_user_app_builder_with_args_if_necessary

from deployments.post_processor import (
    DeliveryChain,
    PostProcessor,
    Provenance,
    deliver_from_master,
)
from deployments.renders import RenderedSong
from pipeline.audio import raw_render_bytes
from pipeline.encode import decode_audio
from pipeline.provenance import prompt_sha256, read_credentials
from serve.app import build_app
from serve.certs import ensure_dev_chain
from serve.config import AppConfig, PostProcessConfig, WatermarkConfig, resolve_config
from serve.http.auth import LOCAL_OWNER
from serve.http.errors import ApiError
from serve.http.media import object_response
from serve.local_services import LocalSeaweedFS
from serve.services import ApiServices
from serve.store import (
    RAW_RENDER_CONTENT_TYPE,
    master_info_key,
    master_key,
    open_job_store,
    open_object_store,
    raw_render_key,
)
from tests.http_graph import api_services

# -- configuration --------------------------------------------------------------------------------


def test_default_is_m4a_eager_and_the_rest_lazy() -> None:
    post = AppConfig().postprocess
    assert post.eager_formats == ["m4a"]
    assert post.eager == ["m4a"] and post.lazy == ["mp3", "flac", "wav"]


def test_unset_eager_formats_keep_every_format_eager_when_m4a_is_not_served() -> None:
    post = PostProcessConfig(formats=["wav", "mp3"])
    assert post.eager == ["wav", "mp3"] and post.lazy == []
    # and survives the environment round trip the builder makes
    assert resolve_config({"postprocess": {"formats": ["wav"]}}).postprocess.eager == ["wav"]


def test_explicit_eager_formats_are_kept_in_served_order() -> None:
    post = PostProcessConfig(formats=["m4a", "mp3", "wav"], eager_formats=["wav", "m4a"])
    assert post.eager == ["m4a", "wav"] and post.lazy == ["mp3"]


@pytest.mark.parametrize(
    ("postprocess", "message"),
    [
        (
            {"formats": ["m4a", "mp3"], "eager_formats": ["m4a", "flac"]},
            r"postprocess\.eager_formats lists flac, which postprocess\.formats does not serve",
        ),
        (
            {"formats": ["m4a", "mp3"], "eager_formats": ["mp3"]},
            r"postprocess\.eager_formats must include m4a .* add m4a to postprocess\.eager_formats",
        ),
        ({"formats": ["wav"], "eager_formats": []}, r"postprocess\.eager_formats is empty"),
    ],
)
def test_bad_eager_formats_name_the_setting_and_the_fix(postprocess: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message) as caught:
        AppConfig.model_validate({"postprocess": postprocess})
    assert caught.value.errors()[0]["loc"][0] == "postprocess"


def test_light_deployments_have_their_own_concurrent_defaults() -> None:
    deployments = AppConfig.model_validate(
        {"deployments": {"verifier": {"actor": {"num_cpus": 0.2}}}}
    ).deployments
    assert deployments.verifier.max_ongoing_requests == 8  # role default kept under an override
    assert deployments.verifier.actor.num_cpus == 0.2
    assert deployments.encoder.max_ongoing_requests >= 2
    # One mastering at a time (its lane, tests/unit/test_post_processor.py), one prefetched.
    assert deployments.postprocess.max_ongoing_requests == 2


def test_the_encoder_signs_and_the_verifier_holds_no_key(tmp_path: Path) -> None:
    args = {"storage": {"data_dir": str(tmp_path)}}
    app = call_user_app_builder_with_args_if_necessary(build_app, args)
    bound = {}

    def visit(value: object) -> None:
        deployment = getattr(value, "_bound_deployment", None)
        if deployment is not None and deployment.name not in bound:
            bound[deployment.name] = deployment
            for arg in deployment.init_args:
                visit(arg)

    visit(app)
    encoder_config = bound["OnDemandEncoder"].init_args[0]
    assert isinstance(encoder_config, PostProcessConfig)
    assert encoder_config.c2pa.key_pem is not None  # it signs what it encodes
    assert isinstance(bound["Verifier"].init_args[0], WatermarkConfig)  # reads, never signs


# -- mastering keeps the master; a lazy file is made from it --------------------------------------


def _render(seconds: float = 3.0, sample_rate: int = 48_000) -> np.ndarray:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    left = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 0.5 * t))
    right = 0.25 * np.sin(2 * np.pi * 330 * t + 0.3)
    return np.stack([left, right]).astype(np.float32)


def _process(tmp_path: Path, postprocess: dict) -> tuple[AppConfig, dict[str, str], str]:
    config = resolve_config({"storage": {"data_dir": str(tmp_path)}, "postprocess": postprocess})
    ensure_dev_chain(config.postprocess.c2pa)
    processor = PostProcessor(config.postprocess, config.storage)
    job_id = f"song_test{len(postprocess)}"
    audio = _render()

    async def run() -> dict[str, str]:
        objects = open_object_store(config.storage)
        key = raw_render_key(job_id, 0)
        await objects.put(key, raw_render_bytes(audio), RAW_RENDER_CONTENT_TYPE)
        rendered = RenderedSong(key, audio.shape[1], 48_000, "sketch", "1", "r", 0.0, 1.0)
        provenance = Provenance(
            title="lazy", seed=5, prompt_sha256=prompt_sha256("x"), created="2026-01-01T00:00:00Z"
        )
        done = await processor.process(
            rendered, job_id=job_id, index=0, target_lufs=-14.0, provenance=provenance
        )
        return done.objects

    return config, asyncio.run(run()), job_id


def test_mastering_stores_only_eager_formats_and_the_master(tmp_path: Path) -> None:
    _, objects, job_id = _process(tmp_path / "lazy", {})
    assert set(objects) == {"m4a", "hls", "peaks", "master"}
    assert objects["master"] == master_key(job_id, 0)
    store = open_object_store(
        resolve_config({"storage": {"data_dir": str(tmp_path / "lazy")}}).storage
    )
    info = json.loads(asyncio.run(store.get(master_info_key(job_id, 0))))
    assert info["sample_rate"] == 48_000 and info["credentials"]["seed"] == 5

    # Everything eager: no master is kept (nothing would ever be made from it).
    _, eager_objects, _ = _process(
        tmp_path / "eager", {"eager_formats": ["m4a", "mp3", "flac", "wav"]}
    )
    assert set(eager_objects) == {"m4a", "mp3", "flac", "wav", "hls", "peaks"}


def test_a_lazy_file_matches_the_eager_one_and_carries_the_same_credentials(
    tmp_path: Path,
) -> None:
    config, _, job_id = _process(tmp_path / "lazy", {})
    lazy_store = open_object_store(
        resolve_config({"storage": {"data_dir": str(tmp_path / "lazy")}}).storage
    )
    master = asyncio.run(lazy_store.get(master_key(job_id, 0)))
    info = asyncio.run(lazy_store.get(master_info_key(job_id, 0)))
    _, eager_objects, _ = _process(
        tmp_path / "eager", {"eager_formats": ["m4a", "mp3", "flac", "wav"]}
    )
    eager_store = open_object_store(
        resolve_config({"storage": {"data_dir": str(tmp_path / "eager")}}).storage
    )
    delivery = DeliveryChain(config.postprocess, watermark=False)  # as the OnDemandEncoder's
    for fmt in ("flac", "wav", "mp3"):
        lazy, timings = deliver_from_master(delivery, master, info, fmt)
        assert timings[f"encode_{fmt}"] > 0 and timings["c2pa"] > 0
        eager = asyncio.run(eager_store.get(eager_objects[fmt]))
        lazy_audio, rate = decode_audio(lazy)
        eager_audio, _ = decode_audio(eager)
        assert rate == 48_000 and lazy_audio.shape == eager_audio.shape
        if fmt == "mp3":  # lossy: the same encoder on input equal to 24 bits
            assert np.abs(lazy_audio - eager_audio).max() < 1e-3
        else:  # lossless 24-bit: sample for sample
            assert np.array_equal(lazy_audio, eager_audio)
        lazy_report = read_credentials(lazy, fmt)
        eager_report = read_credentials(eager, fmt)
        assert lazy_report["valid"] is True, lazy_report
        generation = lazy_report["manifest"]["generation"]
        assert generation == eager_report["manifest"]["generation"]
        assert generation["seed"] == 5 and generation["created"] == "2026-01-01T00:00:00Z"


# -- the API on Postgres and S3: two ingress replicas, a presigned redirect -----------------------


def test_first_requests_on_two_api_replicas_make_the_file_once_and_redirect_to_it(
    tmp_path: Path, postgres_url: str, s3_url: str, seaweedfs: LocalSeaweedFS
) -> None:
    config = resolve_config(
        {
            "storage": {
                "data_dir": str(tmp_path),
                "database_url": postgres_url,
                "storage_url": s3_url,
                "s3_endpoint_url": seaweedfs.endpoint_url,
                "presign_media": True,
            }
        }
    )
    ensure_dev_chain(config.postprocess.c2pa)
    audio = _render()

    async def scenario() -> None:
        jobs = open_job_store(config.storage)
        objects = open_object_store(config.storage)
        job, _ = await jobs.create_job(owner=LOCAL_OWNER, request={}, seed=4, variations=1)
        claimed = await jobs.claim_next("conductor", lease_s=30, max_attempts=1)
        assert claimed is not None and claimed.lease_token is not None
        key = raw_render_key(job.id, 0)
        await objects.put(key, raw_render_bytes(audio), RAW_RENDER_CONTENT_TYPE)
        rendered = RenderedSong(key, audio.shape[1], 48_000, "sketch", "1", "r", 0.0, 1.0)
        provenance = Provenance(
            title="s3", seed=4, prompt_sha256=prompt_sha256("y"), created="2026-01-01T00:00:00Z"
        )
        done = await PostProcessor(config.postprocess, config.storage).process(
            rendered, job_id=job.id, index=0, target_lufs=-14.0, provenance=provenance
        )
        await jobs.update_variation(
            job.id, 0, claimed.lease_token, status="succeeded", objects=done.objects
        )
        await jobs.update_job(job.id, claimed.lease_token, status="succeeded")

        # Two API replicas, each with its own in-process OnDemandEncoder (the real class).
        replicas = [api_services(config) for _ in range(2)]

        async def first_request(api: ApiServices, fmt: str) -> object:
            key, filename = await api.media.audio_key(job.id, 0, fmt, LOCAL_OWNER)
            return await object_response(api.objects, api.config, key, filename, None, False)

        answers = await asyncio.gather(
            *(first_request(replica, "mp3") for replica in replicas for _ in range(3))
        )
        assert all(isinstance(a, RedirectResponse) and a.status_code == 307 for a in answers)
        delivery = await jobs.get_delivery(job.id, 0, "mp3")
        assert delivery is not None and (delivery.status, delivery.claims) == ("delivered", 1)
        recorded = await jobs.get_job(job.id)
        assert recorded is not None and recorded.variations[0].objects["mp3"].endswith(".mp3")
        link = answers[0].headers["location"]
        async with httpx.AsyncClient() as client:
            mp3 = (await client.get(link)).content
            ranged = await client.get(link, headers={"Range": "bytes=0-9"})
        assert ranged.status_code == 206 and ranged.content == mp3[:10]
        report = read_credentials(mp3, "mp3")
        assert report["valid"] is True and report["manifest"]["generation"]["seed"] == 4
        # A format that is not served is refused by name.
        with pytest.raises(ApiError) as refused:
            await first_request(replicas[0], "ogg")
        assert refused.value.status == 404 and refused.value.field == "fmt"
        await jobs.close()

    asyncio.run(scenario())
