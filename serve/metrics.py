"""songserve's own metrics: what an operator tunes capacity on, beside Serve's request metrics.

Every metric is a `ray.serve.metrics` object, so each node's Ray dashboard agent exports it for
Prometheus as `ray_<name>` (counters also as `ray_<name>_total`); Serve adds the `deployment`,
`replica` and `application` tags. Our own tags are low-cardinality on purpose — pool, model,
stage, format, status, reason, outcome — never a song id or an owner: a label per song would grow
Prometheus without bound. `config/grafana/songserve.json` charts all of them and the README's
"Tuning capacity" section says which question each panel answers.

The objects are made once per process, on first use, inside the replica that reports them (Ray
metrics belong to the worker process that created them). Outside Ray (a unit test, a benchmark)
they are valid objects whose values simply go nowhere.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ray.serve.metrics import Counter, Gauge, Histogram

# Bucket bounds in seconds: from a store write (ms) to a long song's whole life (half an hour).
SECONDS_BUCKETS: list[float] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
SECONDS_BUCKETS += [20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0]
# Render seconds per second of audio: fast GPUs sit near 0.01, a CPU pool near 0.05–1.
SPEED_BUCKETS: list[float] = [0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0]
ATTEMPT_BUCKETS: list[float] = [1.0, 2.0, 3.0, 4.0, 5.0, 8.0]


def _tag_keys(*names: str) -> Any:
    """`names` as Ray's `tag_keys` (its stubs type them as a 1-tuple; any length works)."""
    return names


class SongMetrics:
    """Every songserve metric (see `METRIC_NAMES`); made by `song_metrics()`."""

    def __init__(self) -> None:
        from ray.serve.metrics import Counter, Gauge, Histogram

        self.jobs: Gauge = Gauge(
            "songserve_jobs",
            description="Songs in the job store by status (queued, running), as a conductor "
            "replica last counted them; every replica counts the same store: take the max.",
            tag_keys=_tag_keys("status"),
        )
        self.queue_wait: Histogram = Histogram(
            "songserve_queue_wait_seconds",
            description="Seconds from a song's acceptance to its first claim by a conductor.",
            boundaries=SECONDS_BUCKETS,
        )
        self.stage_seconds: Histogram = Histogram(
            "songserve_stage_seconds",
            description="Seconds spent in each stage of a song: lyrics, tags, render, "
            "postprocess, and inside post-processing loudness, watermark, encode (by format), "
            "hls, sign, master (kept for lazy formats), peaks, fetch, store; a lazy format's "
            "first download adds decode_master, encode and sign.",
            boundaries=SECONDS_BUCKETS,
            tag_keys=_tag_keys("stage", "format"),
        )
        self.render_speed: Histogram = Histogram(
            "songserve_render_seconds_per_audio_second",
            description="Replica seconds a decoder pool spent per second of audio rendered (a "
            "batch's time shared among its songs).",
            boundaries=SPEED_BUCKETS,
            tag_keys=_tag_keys("pool", "model"),
        )
        self.song_seconds: Histogram = Histogram(
            "songserve_song_seconds",
            description="Seconds from POST /v1/songs to the song's end (done or failed).",
            boundaries=SECONDS_BUCKETS,
            tag_keys=_tag_keys("outcome"),
        )
        self.refused: Counter = Counter(
            "songserve_admissions_refused",
            description="Requests the API refused for capacity or availability (429 and 503), "
            "by reason code and route.",
            tag_keys=_tag_keys("status", "reason", "route"),
        )
        self.finished: Counter = Counter(
            "songserve_jobs_finished",
            description="Songs finished, by outcome and error code ('ok' on success).",
            tag_keys=_tag_keys("outcome", "code"),
        )
        self.attempts: Histogram = Histogram(
            "songserve_job_attempts",
            description="Claims a song took to finish (1: no conductor was lost on the way).",
            boundaries=ATTEMPT_BUCKETS,
            tag_keys=_tag_keys("outcome"),
        )
        self.retries: Counter = Counter(
            "songserve_stage_retries",
            description="Stage calls tried again within a claim (a replica lost, back-pressure, "
            "a failed render or master), by stage.",
            tag_keys=_tag_keys("stage"),
        )
        self.lyrics_fallbacks: Counter = Counter(
            "songserve_lyrics_fallbacks",
            description="Lyrics the configured LLM failed to write, written by the template "
            "engine instead, by LLM engine.",
            tag_keys=_tag_keys("engine"),
        )
        self.sse_subscribers: Gauge = Gauge(
            "songserve_sse_subscribers",
            description="Open song event streams (SSE) on an API replica.",
        )
        self.webhook_deliveries: Counter = Counter(
            "songserve_webhook_deliveries",
            description="Webhook delivery attempts by outcome: delivered, pending (to be "
            "retried), failed (given up), skipped (the song was canceled).",
            tag_keys=_tag_keys("outcome"),
        )
        self.bytes_written: Counter = Counter(
            "songserve_object_bytes_written",
            description="Bytes written to the object store, by kind of object (render, audio, "
            "hls, peaks, master, stems, lora, other).",
            tag_keys=_tag_keys("kind"),
        )


METRIC_NAMES = (
    "songserve_jobs",
    "songserve_queue_wait_seconds",
    "songserve_stage_seconds",
    "songserve_render_seconds_per_audio_second",
    "songserve_song_seconds",
    "songserve_admissions_refused",
    "songserve_jobs_finished",
    "songserve_job_attempts",
    "songserve_stage_retries",
    "songserve_lyrics_fallbacks",
    "songserve_sse_subscribers",
    "songserve_object_bytes_written",
    "songserve_webhook_deliveries",
    # The decoder's own (deployments/decoder.py).
    "songserve_decoder_songs_per_model_call",
    "songserve_decoder_songs",
    "songserve_decoder_lora_loads",
    "songserve_decoder_renders_stopped",
)
"""Every songserve metric name, as created (Prometheus shows them with a `ray_` prefix)."""


@functools.cache
def song_metrics() -> SongMetrics:
    """This process's metrics, made on first use."""
    return SongMetrics()


def stage_tags(timing_name: str) -> dict[str, str]:
    """The stage tags of one of the post-processor's `timings_s` entries: `encode_mp3` is stage
    `encode`, format `mp3`; `c2pa` is stage `sign`; the others keep their names."""
    if timing_name.startswith("encode_"):
        return {"stage": "encode", "format": timing_name.removeprefix("encode_")}
    return {"stage": "sign" if timing_name == "c2pa" else timing_name, "format": ""}


def observe_stage(stage: str, seconds: float, fmt: str = "") -> None:
    song_metrics().stage_seconds.observe(seconds, tags={"stage": stage, "format": fmt})
