"""`ReplicateSongModel`: song models that cannot run on the cluster, through Replicate's
predictions API (the `replicate` client's async API).

One engine per decoder replica. Each request of a batch becomes one prediction, pinned to the
configured version, at most `replicate.max_concurrent` in flight; the engine's own event loop (a
daemon thread) runs them while the decoder's model thread waits in `render`, reporting progress
and asking, at every report, whether anyone still waits (a canceled song stops there, and its
predictions are canceled on Replicate).

A prediction is created with `Prefer: wait` (`replicate.wait_s`), so a short one answers in the
create call; a longer one is polled every `poll_interval_s`. With `replicate.delivery: webhook` it
is created with Replicate's `completed` webhook to `replicate.webhook_url` instead, and the engine
asks the `delivered` lookup it was given (the ingress stores what the webhook brings; this module
knows nothing of where) every `webhook_check_s`, and Replicate itself only every
`fallback_poll_s`, in case a delivery is lost; a delivered result is handled as a polled one.
A prediction's output (a file URL, whatever the format) is downloaded, decoded, made stereo at the
pool's rate and fitted to the requested duration; the prediction's id and predict time travel
with the audio into the variation's record.

Failures: the model's own error fails that request with the model's message; a prediction
canceled on Replicate, or one that succeeded without output, is not a success; a prediction past
`timeout_s` is canceled and fails. Requests answered 429 or 5xx, or not answered, are retried
`replicate.retries` times with backoff honouring Retry-After (the client retries GETs itself;
creates and cancels are retried here). One request's failure leaves the others of its batch alone.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import os
import random
import re
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from pipeline.song_contracts import SONG_MODELS

from .replicate_inputs import prediction_input

if TYPE_CHECKING:
    from pipeline.progress import ProgressCallback
    from pipeline.song_models import RenderedAudio, RenderFailed, RenderRequest
    from serve.config import DecoderPoolConfig, ReplicateModelConfig

logger = logging.getLogger("ray.serve")

T = TypeVar("T")

DeliveredLookup = Callable[[str], Awaitable[Mapping[str, Any] | None]]
"""A prediction's JSON as its `completed` webhook delivered it, by prediction id; None while
none has arrived. (Given to engines of pools with `replicate.delivery: webhook`.)"""

PROGRESS_STEPS = 100
_PERCENT = re.compile(r"(\d{1,3})\s*%")
_FINISHED = frozenset({"succeeded", "failed", "canceled"})
_RETRY_BACKOFF_S = 1.0
_RETRY_BACKOFF_MAX_S = 30.0
_CANCEL_GRACE_S = 30.0  # how long a stopped render waits for its predictions' cancel calls
_DOWNLOAD_TIMEOUT_S = 120.0


class _Retryable(Exception):
    def __init__(self, cause: str, retry_after_s: float | None) -> None:
        super().__init__(cause)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class DeliveredPrediction:
    """A finished prediction as a webhook delivered it: what the engine reads of a polled one."""

    id: str
    status: str
    output: Any = None
    error: str | None = None
    metrics: dict[str, Any] | None = None

    @classmethod
    def of(cls, payload: Mapping[str, Any]) -> DeliveredPrediction:
        """ValueError for a payload that is not a finished prediction."""
        status, error, metrics = payload.get("status"), payload.get("error"), payload.get("metrics")
        prediction_id = payload.get("id")
        if not isinstance(prediction_id, str) or status not in _FINISHED:
            raise ValueError(f"not a finished prediction: id {prediction_id!r}, status {status!r}")
        return cls(
            id=prediction_id,
            status=status,
            output=payload.get("output"),
            error=None if error is None else str(error),
            metrics=metrics if isinstance(metrics, dict) else None,
        )


def percent_done(logs: str | None) -> int | None:
    """The last "NN%" a prediction's logs show (tqdm bars, "progress 40%"), if any."""
    found = _PERCENT.findall(logs or "")
    return min(int(found[-1]), 100) if found else None


class ReplicateSongModel:
    """A `SongModel` whose renders are Replicate predictions."""

    def __init__(
        self,
        pool: DecoderPoolConfig,
        *,
        environ: dict[str, str] | None = None,
        delivered: DeliveredLookup | None = None,
    ) -> None:
        """`delivered`: where webhook deliveries are found (required with `delivery: webhook`)."""
        import httpx
        import replicate

        if pool.replicate is None:
            raise ValueError(f"models.pools[{pool.name}].replicate: required for {pool.model}")
        settings: ReplicateModelConfig = pool.replicate
        if settings.delivery == "webhook" and delivered is None:
            raise ValueError(
                f"models.pools[{pool.name}].replicate.delivery: webhook needs a decoder that "
                "reads the ingress's deliveries (no lookup was given to the engine); use "
                "delivery: poll here"
            )
        env = os.environ if environ is None else environ
        token = env.get(settings.api_token_env)
        if not token:
            raise ValueError(
                f"models.pools[{pool.name}].replicate.api_token_env: the environment variable "
                f"{settings.api_token_env} is not set; export a Replicate API token in it on "
                "every node that runs this pool"
            )
        self.name: str = pool.model
        self.capabilities = SONG_MODELS[pool.model]
        self.version = f"{settings.model}:{settings.version}"
        self.sample_rate = pool.sample_rate
        self._pool = pool.name
        self._settings = settings
        self._delivered = delivered if settings.delivery == "webhook" else None
        self._client = replicate.Client(
            api_token=token,
            base_url=settings.base_url,
            # Reads wait up to `Prefer: wait` on creates (the client widens that read itself).
            timeout=httpx.Timeout(30.0, read=60.0),
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"{pool.name}-replicate", daemon=True
        )
        self._thread.start()
        self._slots = asyncio.Semaphore(settings.max_concurrent)

    # -- SongModel ---------------------------------------------------------------------------

    def render(
        self, requests: list[RenderRequest], on_progress: ProgressCallback
    ) -> list[RenderedAudio | RenderFailed]:
        percents = [0] * len(requests)
        cleaned_up = threading.Event()
        running = asyncio.run_coroutine_threadsafe(
            self._render_all(requests, percents, cleaned_up), self._loop
        )
        try:
            while True:
                try:
                    return running.result(timeout=self._settings.poll_interval_s)
                except concurrent.futures.TimeoutError:
                    pass
                # Below 100 until every prediction is back; raises WorkStopped when no one waits.
                done = sum(percents) / len(percents)
                on_progress(min(PROGRESS_STEPS - 1, max(1, math.floor(done))), PROGRESS_STEPS)
        except BaseException:
            running.cancel()
            cleaned_up.wait(_CANCEL_GRACE_S)
            raise

    def model_calls(self, requests: list[RenderRequest]) -> list[list[int]]:
        return [[index] for index in range(len(requests))]  # one prediction per request

    def check_health(self) -> None:
        if not self._thread.is_alive():
            raise RuntimeError(f"{self._pool}: the Replicate client's event loop has stopped")

    def load_lora(self, lora_id: str, weights_path: Any) -> None:
        raise ValueError(f"the {self.name} model (on Replicate) does not take LoRAs")

    def unload_lora(self, lora_id: str) -> None:
        return None

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)

    # -- predictions ---------------------------------------------------------------------------

    async def _render_all(
        self, requests: list[RenderRequest], percents: list[int], cleaned_up: threading.Event
    ) -> list[RenderedAudio | RenderFailed]:
        from pipeline.song_models import RenderFailed

        try:
            results = await asyncio.gather(
                *(self._render_one(r, percents, i) for i, r in enumerate(requests)),
                return_exceptions=True,
            )
        finally:
            cleaned_up.set()
        outcome: list[RenderedAudio | RenderFailed] = []
        for result in results:
            if isinstance(result, RenderFailed):
                outcome.append(result)
            elif isinstance(result, BaseException):
                if isinstance(result, asyncio.CancelledError):
                    raise result
                outcome.append(RenderFailed(f"{type(result).__name__}: {result}"))
            else:
                outcome.append(result)
        return outcome

    async def _render_one(
        self, request: RenderRequest, percents: list[int], index: int
    ) -> RenderedAudio:
        async with self._slots:
            creating = asyncio.ensure_future(self._create(request))
            try:
                # Shielded: a song canceled while its create is in flight still learns the
                # prediction's id, to cancel it instead of paying for a song no one hears.
                prediction = await asyncio.shield(creating)
            except asyncio.CancelledError:
                await self._cancel_once_created(creating)
                raise
            prediction = await self._until_finished(prediction, percents, index)
            audio = await self._audio_of(prediction, request)
        percents[index] = PROGRESS_STEPS
        from pipeline.song_models import RenderedAudio

        return RenderedAudio(audio, self._details(prediction))

    async def _create(self, request: RenderRequest) -> Any:
        settings = self._settings
        inputs = prediction_input(self.name, request, settings.input)

        delivery: dict[str, Any] = {}
        if self._delivered is not None:
            delivery = {"webhook": settings.webhook_url, "webhook_events_filter": ["completed"]}

        async def create() -> Any:
            return await self._client.predictions.async_create(
                version=settings.version, input=inputs, wait=settings.wait_s or False, **delivery
            )

        prediction = await self._retrying("create a prediction", create)
        logger.info(
            "%s: prediction %s for %s/%s (%s)",
            self._pool,
            prediction.id,
            request.job_id,
            request.variation,
            prediction.status,
        )
        return prediction

    async def _until_finished(self, prediction: Any, percents: list[int], index: int) -> Any:
        from pipeline.song_models import RenderFailed

        settings = self._settings
        deadline = time.monotonic() + settings.timeout_s
        by_webhook = self._delivered is not None
        # With webhooks, Replicate is asked only this often (a lost delivery), else at every turn.
        next_poll = time.monotonic() + (settings.fallback_poll_s if by_webhook else 0.0)
        try:
            while prediction.status not in _FINISHED:
                if prediction.status == "processing":
                    percents[index] = max(percents[index], percent_done(prediction.logs) or 1)
                if time.monotonic() >= deadline:
                    raise RenderFailed(
                        f"prediction {prediction.id} did not finish within "
                        f"replicate.timeout_s={settings.timeout_s:g} s, so it is canceled"
                    )
                await asyncio.sleep(
                    settings.webhook_check_s if by_webhook else settings.poll_interval_s
                )
                if by_webhook:
                    delivered = await self._delivered_result(prediction.id)
                    if delivered is not None:
                        prediction = delivered
                        continue
                    if time.monotonic() < next_poll:
                        continue
                    next_poll = time.monotonic() + settings.fallback_poll_s
                prediction = await self._retrying(
                    "poll a prediction", _getter(self._client, prediction.id)
                )
        except BaseException:  # timed out, stopped (a canceled song) or lost: stop paying
            await self._cancel(prediction.id)
            raise
        if prediction.status == "failed":
            raise RenderFailed(
                f"{self.name} on Replicate failed (prediction {prediction.id}): "
                f"{prediction.error or 'no error message'}"
            )
        if prediction.status == "canceled":
            raise RenderFailed(f"prediction {prediction.id} was canceled on Replicate")
        if not prediction.output:
            raise RenderFailed(f"prediction {prediction.id} succeeded without any output")
        return prediction

    async def _delivered_result(self, prediction_id: str) -> DeliveredPrediction | None:
        """The prediction's webhook delivery, if one has arrived; None otherwise, and when the
        lookup fails (the fallback poll still finds the result)."""
        assert self._delivered is not None
        try:
            payload = await self._delivered(prediction_id)
            if payload is None:
                return None
            found = DeliveredPrediction.of(payload)
        except Exception as error:  # noqa: BLE001 - a store outage or a bad record: poll instead
            logger.warning(
                "%s: could not read the delivery of %s: %s", self._pool, prediction_id, error
            )
            return None
        if found.id != prediction_id:
            logger.warning("%s: the delivery for %s names %s", self._pool, prediction_id, found.id)
            return None
        return found

    async def _cancel_once_created(self, creating: asyncio.Future[Any]) -> None:
        try:
            prediction = await asyncio.wait_for(creating, _CANCEL_GRACE_S)
        except BaseException:  # noqa: BLE001 - no prediction to cancel (or none known in time)
            return
        if prediction.status not in _FINISHED:
            await self._cancel(prediction.id)

    async def _cancel(self, prediction_id: str) -> None:
        try:
            await self._retrying(
                "cancel a prediction",
                lambda: self._client.predictions.async_cancel(prediction_id),
            )
            logger.info("%s: canceled prediction %s", self._pool, prediction_id)
        except Exception as error:  # noqa: BLE001 - it runs out by itself; say so and go on
            logger.warning("%s: could not cancel %s: %s", self._pool, prediction_id, error)

    async def _audio_of(self, prediction: Any, request: RenderRequest) -> np.ndarray:
        import httpx

        from pipeline.audio import conform_audio
        from pipeline.encode import decode_audio
        from pipeline.song_models import RenderFailed

        url = _first_file_url(prediction.output)
        if url is None:
            raise RenderFailed(
                f"prediction {prediction.id} gave no audio file: output {prediction.output!r:.200}"
            )

        async def download() -> bytes:
            # Output files are public links (replicate.delivery): fetched without the token.
            async with httpx.AsyncClient(timeout=_DOWNLOAD_TIMEOUT_S) as files:
                response = await files.get(url, follow_redirects=True)
            if response.status_code == 429 or response.status_code >= 500:
                raise _Retryable(f"{url} answered {response.status_code}", None)
            response.raise_for_status()
            return response.content

        if url.startswith("data:"):
            data = _data_url_bytes(url)
        else:
            data = await self._retrying("download the output", download)
        try:
            audio, rate = await asyncio.to_thread(decode_audio, data)
        except ValueError as error:
            raise RenderFailed(f"prediction {prediction.id}'s output {url}: {error}") from error
        samples = round(request.duration_s * self.sample_rate)
        return await asyncio.to_thread(conform_audio, audio, rate, self.sample_rate, samples)

    def _details(self, prediction: Any) -> dict[str, Any]:
        metrics = prediction.metrics or {}
        return {
            "provider": "replicate",
            "prediction_id": prediction.id,
            "model": self._settings.model,
            "version": self._settings.version,
            "predict_time_s": metrics.get("predict_time"),
        }

    async def _retrying(self, doing: str, call: Callable[[], Awaitable[T]]) -> T:
        """`call()`, retried on 429, 5xx and transport errors; other errors propagate."""
        from pipeline.song_models import RenderFailed

        attempts = self._settings.retries + 1
        for attempt in range(1, attempts + 1):
            try:
                return await call()
            except Exception as error:  # sorted into retryable or not below
                retryable = _retryable(error)
                if retryable is None:
                    raise RenderFailed(f"could not {doing} on Replicate: {error}") from error
                if attempt == attempts:
                    raise RenderFailed(
                        f"could not {doing} on Replicate after {attempts} attempts: {retryable}"
                    ) from error
                backoff = min(_RETRY_BACKOFF_MAX_S, _RETRY_BACKOFF_S * 2 ** (attempt - 1))
                delay = max(retryable.retry_after_s or 0.0, backoff * random.uniform(0.5, 1.0))
                logger.info("%s: %s (retry in %.1f s)", self._pool, retryable, delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")


def _getter(client: Any, prediction_id: str) -> Callable[[], Awaitable[Any]]:
    return lambda: client.predictions.async_get(prediction_id)


def _retryable(error: BaseException) -> _Retryable | None:
    """What makes `error` worth another try (429, 5xx, no answer), or None when it is not."""
    import httpx
    from replicate.exceptions import ReplicateError

    if isinstance(error, _Retryable):
        return error
    if isinstance(error, ReplicateError):
        status = error.status or 0
        if status == 429 or status >= 500:
            return _Retryable(f"Replicate answered {status}: {error.detail or error}", None)
        return None
    if isinstance(error, httpx.TransportError):
        return _Retryable(f"no answer from Replicate: {type(error).__name__}: {error}", None)
    return None


def _first_file_url(output: Any) -> str | None:
    """The first file URL in a prediction's output: a URL, a list of them, or a dict of them
    (audio first); `FileOutput` objects give theirs."""
    if output is None:
        return None
    url = getattr(output, "url", None)
    if isinstance(url, str):
        return url
    if isinstance(output, str):
        return output if output.startswith(("http://", "https://", "data:")) else None
    if isinstance(output, dict):
        preferred = [output[k] for k in ("audio", "wav", "mp3", "output") if k in output]
        others = [v for k, v in output.items() if k not in ("audio", "wav", "mp3", "output")]
        output = preferred + others
    if isinstance(output, list | tuple):
        for item in output:
            found = _first_file_url(item)
            if found is not None:
                return found
    return None


def _data_url_bytes(url: str) -> bytes:
    """The bytes of a `data:` URL (Replicate inlines small files that way)."""
    import base64
    from urllib.parse import unquote_to_bytes

    header, _, payload = url.partition(",")
    if header.endswith(";base64"):
        return base64.b64decode(payload)
    return unquote_to_bytes(payload)
