"""The Replicate decoder pool (`pipeline.engines.replicate`): the real `replicate` client against
`tests.replicate_server`, a local server that speaks Replicate's predictions protocol (Replicate
itself cannot be reached from here). The "models" registered on it are test doubles of YuE and
HeartMuLa that return a real audio file; nothing here claims to be either model's output."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest

from pipeline.encode import decode_audio, encode_audio
from pipeline.engines.replicate import ReplicateSongModel, percent_done
from pipeline.engines.replicate_inputs import heartmula_tags, yue_lyrics
from pipeline.lyrics import LyricSection
from pipeline.progress import WorkStopped
from pipeline.song_contracts import auto_models
from pipeline.song_models import RenderedAudio, RenderFailed, RenderRequest, load_song_model
from pipeline.tags import normalize_style
from serve.config import DecoderPoolConfig
from tests.replicate_server import ModelError, ReplicateServer, RunContext

YUE_VERSION = "a" * 64
HEARTMULA_VERSION = "b" * 64
TOKEN_ENV = "TEST_REPLICATE_TOKEN"


def _tone(seconds: float, rate: int = 44_100, channels: int = 1) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return np.tile(0.3 * np.sin(2 * np.pi * 440 * t, dtype=np.float64), (channels, 1)).astype(
        np.float32
    )


def _song_file(seconds: float, fmt: str = "mp3") -> bytes:
    """What a hosted song model returns: an encoded file, here a 44.1 kHz mono tone."""
    return encode_audio(_tone(seconds), 44_100, fmt)


@pytest.fixture
def server() -> Any:
    with ReplicateServer() as running:
        yield running


def _pool(server: ReplicateServer, model: str = "yue", **replicate: Any) -> DecoderPoolConfig:
    owner_name, version = {
        "yue": ("fofr/yue", YUE_VERSION),
        "heartmula": ("meta-innovation/heart_mula", HEARTMULA_VERSION),
    }[model]
    settings = {
        "model": owner_name,
        "version": version,
        "api_token_env": TOKEN_ENV,
        "base_url": server.base_url,
        "poll_interval_s": 0.05,
        "wait_s": 0,
        **replicate,
    }
    return DecoderPoolConfig.model_validate(
        {"name": "YuE" if model == "yue" else "HeartMuLa", "model": model, "replicate": settings}
    )


def _engine(server: ReplicateServer, model: str = "yue", **replicate: Any) -> ReplicateSongModel:
    engine = ReplicateSongModel(
        _pool(server, model, **replicate), environ={TOKEN_ENV: server.token}
    )
    return engine


def _request(variation: int = 0, duration_s: float = 6.0, **fields: Any) -> RenderRequest:
    language = fields.pop("language", "zh")
    return RenderRequest(
        job_id="job1",
        variation=variation,
        seed=41 + variation,
        duration_s=duration_s,
        tags=normalize_style("mandopop ballad with piano, sad", language=language),
        sections=[
            LyricSection("intro"),
            LyricSection("verse", ["月光照在窗前", "你的声音很远"]),
            LyricSection("chorus", ["我还在等你"]),
        ],
        instrumental=False,
        language=language,
        **fields,
    )


def _succeeding(seconds: float, fmt: str = "mp3") -> Any:
    def run(inputs: dict[str, Any], ctx: RunContext) -> Any:
        ctx.log("generating 50%")
        ctx.sleep(0.1)
        return ctx.file(f"out.{fmt}", _song_file(seconds, fmt), f"audio/{fmt}")

    return run


def test_a_yue_render_is_downloaded_decoded_and_fitted(server: ReplicateServer) -> None:
    server.add_model("fofr/yue", YUE_VERSION, _succeeding(7.3))
    engine = _engine(server)
    reports: list[tuple[int, int]] = []
    try:
        [result] = engine.render([_request()], lambda step, steps: reports.append((step, steps)))
    finally:
        engine.close()

    assert isinstance(result, RenderedAudio)
    # 44.1 kHz mono mp3 of 7.3 s → 48 kHz stereo, exactly the 6 s asked for.
    assert result.audio.shape == (2, 6 * 48_000) and result.audio.dtype == np.float32
    assert np.abs(result.audio[:, 48_000:96_000]).max() > 0.2  # the tone, not silence
    assert result.audio[:, -1].max() == pytest.approx(0.0, abs=1e-3)  # faded at the cut
    details = result.details
    [prediction] = server.predictions.values()
    assert details["provider"] == "replicate" and details["prediction_id"] == prediction["id"]
    assert details["version"] == YUE_VERSION and details["model"] == "fofr/yue"
    assert details["predict_time_s"] == pytest.approx(prediction["metrics"]["predict_time"])
    assert details["predict_time_s"] >= 0.1
    # Pinned to the version; YuE's own input form.
    assert prediction["version"] == YUE_VERSION
    sent = prediction["input"]
    assert sent["seed"] == 41 and sent["num_segments"] == 2
    assert sent["lyrics"] == yue_lyrics(_request().sections)
    assert sent["lyrics"].startswith("[verse]\n月光照在窗前") and "[chorus]" in sent["lyrics"]
    assert "piano" in sent["genre_description"] and "sad" in sent["genre_description"]
    assert 500 <= sent["max_new_tokens"] <= 3000
    assert reports and all(steps == 100 and 1 <= step < 100 for step, steps in reports)


def test_a_short_prediction_answers_in_the_create_call(server: ReplicateServer) -> None:
    server.add_model(
        "fofr/yue",
        YUE_VERSION,
        lambda inputs, ctx: ctx.file("out.wav", _song_file(2.0, "wav"), "audio/wav"),
    )
    engine = _engine(server, wait_s=5)
    try:
        [result] = engine.render([_request(duration_s=2.0)], lambda step, steps: None)
    finally:
        engine.close()
    assert isinstance(result, RenderedAudio) and result.audio.shape == (2, 96_000)
    methods = [(m, p) for m, p, _ in server.requests if p.startswith("/v1/")]
    assert methods == [("POST", "/v1/predictions")]  # no polling needed
    create_headers = next(h for m, p, h in server.requests if m == "POST")
    assert create_headers["prefer"] == "wait=5"


def test_heartmula_gets_its_own_input_form(server: ReplicateServer) -> None:
    server.add_model("meta-innovation/heart_mula", HEARTMULA_VERSION, _succeeding(3.0, "flac"))
    engine = _engine(server, "heartmula", input={"topk": 20, "tags": "ignored"})
    request = _request(duration_s=3.0, language="en")
    try:
        [result] = engine.render([request], lambda step, steps: None)
    finally:
        engine.close()
    assert isinstance(result, RenderedAudio) and result.audio.shape == (2, 3 * 48_000)
    [prediction] = server.predictions.values()
    sent = prediction["input"]
    assert sent["tags"] == heartmula_tags(request.tags) and sent["tags"] != "ignored"
    assert sent["tags"].split(",")[0] == request.tags.genre and ", " not in sent["tags"]
    assert sent["max_audio_length_ms"] == 3000 and sent["topk"] == 20  # operator's fixed input
    assert sent["lyrics"].startswith("[Intro]\n\n[Verse]\n月光照在窗前")  # its section names
    assert "seed" not in sent  # the model takes none


def test_a_model_error_fails_only_its_request(server: ReplicateServer) -> None:
    def run(inputs: dict[str, Any], ctx: RunContext) -> Any:
        if inputs["seed"] == 42:
            raise ModelError("CUDA out of memory while decoding segment 2")
        return ctx.file("out.mp3", _song_file(2.0), "audio/mpeg")

    server.add_model("fofr/yue", YUE_VERSION, run)
    engine = _engine(server)
    try:
        good, bad = engine.render(
            [_request(0, duration_s=2.0), _request(1, duration_s=2.0)], lambda s, n: None
        )
    finally:
        engine.close()
    assert isinstance(good, RenderedAudio)
    assert isinstance(bad, RenderFailed)
    assert "CUDA out of memory while decoding segment 2" in str(bad)
    assert "failed" in str(bad)
    assert server.cancel_count() == 0  # a finished prediction is not canceled


@pytest.mark.parametrize(
    ("output", "expected"),
    [(None, "without any output"), ({"text": "no audio"}, "gave no audio file")],
)
def test_a_success_without_audio_is_not_a_success(
    server: ReplicateServer, output: Any, expected: str
) -> None:
    server.add_model("fofr/yue", YUE_VERSION, lambda inputs, ctx: output)
    engine = _engine(server)
    try:
        [result] = engine.render([_request()], lambda s, n: None)
    finally:
        engine.close()
    assert isinstance(result, RenderFailed) and expected in str(result)


def test_a_prediction_canceled_on_replicate_is_not_a_success(server: ReplicateServer) -> None:
    started = threading.Event()

    def run(inputs: dict[str, Any], ctx: RunContext) -> Any:
        started.set()
        ctx.sleep(30)
        return None

    server.add_model("fofr/yue", YUE_VERSION, run)
    engine = _engine(server)
    outcome: list[Any] = []
    rendering = threading.Thread(
        target=lambda: outcome.extend(engine.render([_request()], lambda s, n: None))
    )
    rendering.start()
    assert started.wait(10)
    [prediction_id] = server.predictions
    import httpx

    # Someone cancels it on Replicate's side (its web page, another client).
    httpx.post(
        f"{server.base_url}/v1/predictions/{prediction_id}/cancel",
        headers={"Authorization": f"Bearer {server.token}"},
    ).raise_for_status()
    rendering.join(10)
    engine.close()
    [result] = outcome
    assert isinstance(result, RenderFailed) and "was canceled on Replicate" in str(result)


def test_429_and_5xx_are_retried(server: ReplicateServer) -> None:
    server.add_model("fofr/yue", YUE_VERSION, _succeeding(2.0))
    server.fail_next(1, 429, path_prefix="/v1/predictions", method="POST", retry_after=1)
    server.fail_next(2, 503, path_prefix="/v1/predictions/", method="GET")
    engine = _engine(server)
    try:
        [result] = engine.render([_request(duration_s=2.0)], lambda s, n: None)
    finally:
        engine.close()
    assert isinstance(result, RenderedAudio)
    creates = [p for m, p, _ in server.requests if m == "POST" and p == "/v1/predictions"]
    assert len(creates) == 2  # the 429, then the create that worked
    assert len(server.predictions) == 1


def test_a_client_error_is_not_retried(server: ReplicateServer) -> None:
    engine = _engine(server)  # the pinned version does not exist there: 422
    try:
        [result] = engine.render([_request()], lambda s, n: None)
    finally:
        engine.close()
    assert isinstance(result, RenderFailed) and "could not create a prediction" in str(result)
    creates = [p for m, p, _ in server.requests if m == "POST"]
    assert len(creates) == 1


def test_a_stopped_render_cancels_its_predictions(server: ReplicateServer) -> None:
    """A canceled song: the decoder's progress callback raises WorkStopped; the engine cancels
    every prediction of the batch on Replicate before it returns."""
    running = threading.Event()
    saw_cancel: list[bool] = []

    def run(inputs: dict[str, Any], ctx: RunContext) -> Any:
        running.set()
        ctx.sleep(30)
        saw_cancel.append(ctx.canceled)
        return None

    server.add_model("fofr/yue", YUE_VERSION, run)
    engine = _engine(server)

    def on_progress(step: int, steps: int) -> None:
        if running.is_set():
            raise WorkStopped("no one waits")

    started = time.monotonic()
    with pytest.raises(WorkStopped):
        engine.render([_request(0), _request(1)], on_progress)
    engine.close()
    assert time.monotonic() - started < 20
    assert server.cancel_count() == 2
    server.wait_idle()
    assert {p["status"] for p in server.predictions.values()} == {"canceled"}
    # A cancel finishes a prediction at once: one canceled before its run began never runs, and
    # a run may still be returning. Every run that began saw the cancel.
    ran = [p for p in server.predictions.values() if p["started_at"] is not None]
    deadline = time.monotonic() + 10
    while len(saw_cancel) < len(ran) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ran and saw_cancel == [True] * len(ran)


def test_a_prediction_past_its_timeout_is_canceled_and_fails(server: ReplicateServer) -> None:
    server.add_model("fofr/yue", YUE_VERSION, lambda inputs, ctx: ctx.sleep(30))
    engine = _engine(server, timeout_s=0.5)
    try:
        [result] = engine.render([_request()], lambda s, n: None)
    finally:
        engine.close()
    assert isinstance(result, RenderFailed) and "replicate.timeout_s=0.5" in str(result)
    assert server.cancel_count() == 1


def test_the_token_comes_from_the_environment(server: ReplicateServer) -> None:
    with pytest.raises(ValueError, match=r"replicate\.api_token_env.*TEST_REPLICATE_TOKEN"):
        ReplicateSongModel(_pool(server), environ={})


def test_a_pool_loads_its_engine_by_declared_capability(
    server: ReplicateServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, server.token)
    engine = load_song_model(_pool(server))
    try:
        assert isinstance(engine, ReplicateSongModel) and engine.capabilities.remote
        engine.check_health()
        with pytest.raises(ValueError, match="does not take LoRAs"):
            engine.load_lora("x", "x")
    finally:
        engine.close()  # type: ignore[attr-defined]


def test_a_replicate_model_needs_its_settings() -> None:
    with pytest.raises(ValueError, match=r"models\.pools\[YuE\].*replicate: \{model"):
        DecoderPoolConfig.model_validate({"name": "YuE", "model": "yue"})
    with pytest.raises(ValueError, match="version"):
        DecoderPoolConfig.model_validate(
            {"name": "YuE", "model": "yue", "replicate": {"model": "fofr/yue", "version": "v1"}}
        )
    with pytest.raises(ValueError, match="apply only to models that run on Replicate"):
        DecoderPoolConfig.model_validate(
            {
                "name": "Sketch",
                "model": "sketch",
                "replicate": {"model": "fofr/yue", "version": YUE_VERSION},
            }
        )


def test_auto_sends_chinese_japanese_and_korean_to_yue_when_it_is_served() -> None:
    order = ["ace-step", "sketch"]
    for language in ("zh", "ja", "ko"):
        assert auto_models(language, order, {"ace-step", "sketch", "yue"})[0] == "yue"
        assert auto_models(language, order, {"ace-step", "sketch"}) == ["ace-step", "sketch"]
    assert auto_models("en", order, {"ace-step", "sketch", "yue"}) == ["ace-step", "sketch"]
    assert auto_models("es", order, {"sketch", "yue", "heartmula"}) == ["sketch"]


def test_percent_done_reads_the_last_percentage_in_the_logs() -> None:
    assert percent_done(None) is None and percent_done("loading model") is None
    assert percent_done("stage 1: 10%|#  | 3/30\nstage 1: 43%|####") == 43
    assert percent_done("200% sure") == 100


def test_the_engine_output_decodes_like_any_other_file() -> None:
    audio, rate = decode_audio(_song_file(1.0, "mp3"))
    assert rate == 44_100 and audio.shape[0] == 1
