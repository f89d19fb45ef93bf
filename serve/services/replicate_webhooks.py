"""Replicate's webhook deliveries for pools with `replicate.delivery: webhook`.

Replicate POSTs a prediction's JSON to `replicate.webhook_url` (this cluster's
`POST /v1/replicate/webhook`) when it completes, signed the Standard Webhooks way with the
account's `whsec_…` secret (`serve.webhooks.verify`). The signature is the authentication: the
route takes no API key. A verified delivery of a finished prediction (succeeded, failed,
canceled) is stored in the object store at `replicate_prediction_key(id)`, trimmed to what the
engine reads (no input, no logs: a song's lyrics stay out of it), and the decoder replica
waiting for that prediction finds it there (`delivered_prediction_lookup`). Deliveries are at
least once; a repeat overwrites the same bytes.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any

from serve.http.errors import ApiError
from serve.store import REPLICATE_PREDICTION_CONTENT_TYPE, replicate_prediction_key
from serve.webhooks import verify

if TYPE_CHECKING:
    from serve.config import AppConfig
    from serve.store import ObjectStore

logger = logging.getLogger("ray.serve")

FINISHED_STATUSES = frozenset({"succeeded", "failed", "canceled"})
# What the decoder needs of a delivered prediction (pipeline.engines.replicate reads these).
_KEPT_FIELDS = ("id", "status", "output", "error", "metrics", "completed_at")


class ReplicateWebhookService:
    """Verifies and keeps Replicate's deliveries. The secrets are read from the environment of
    this (API) process at each delivery, from every `webhook_secret_env` a webhook pool names
    (pools on different Replicate accounts have different secrets)."""

    def __init__(
        self,
        config: AppConfig,
        objects: ObjectStore,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._objects = objects
        self._environ = os.environ if environ is None else environ
        self._secret_envs = sorted(
            {
                pool.replicate.webhook_secret_env
                for pool in config.models.webhook_delivered_pools
                if pool.replicate is not None
            }
        )

    async def receive(self, headers: Mapping[str, str], body: bytes) -> None:
        """Verify one delivery (`headers` with lower-case names) and keep it when its prediction
        has finished. ApiError: 404 when no pool delivers by webhook, 503 when no secret is set,
        401 for a missing, wrong or stale (over 5 min) signature, 400 for a signed body that is
        not a prediction."""
        if not self._secret_envs:
            raise ApiError(
                404,
                "not_found",
                "no Replicate pool here delivers by webhook "
                "(models.pools[*].replicate.delivery: webhook)",
            )
        secrets = [self._environ[name] for name in self._secret_envs if self._environ.get(name)]
        if not secrets:
            raise ApiError(
                503,
                "webhook_secret_missing",
                f"Replicate webhooks cannot be verified: set {' or '.join(self._secret_envs)} "
                "in the API's environment to the whsec_ secret from Replicate's "
                "GET /v1/webhooks/default/secret (replicate.webhook_secret_env)",
            )
        refusals: list[str] = []
        for secret in secrets:
            try:
                verify(secret, headers, body)
                break
            except ValueError as error:
                refusals.append(str(error))
        else:
            raise ApiError(401, "invalid_signature", f"webhook refused: {refusals[0]}")

        prediction = _prediction_of(body)
        if prediction is None:
            raise ApiError(400, "invalid_body", "the webhook body is not a prediction", "body")
        if prediction["status"] not in FINISHED_STATUSES:
            return  # only `completed` is asked for; an earlier event has nothing to keep
        # received_at lets the retention sweep find deliveries nobody read
        # (serve.workflow.retention.sweep_stale_deliveries).
        stored = {**prediction, "received_at": time.time()}
        data = json.dumps(stored, separators=(",", ":")).encode()
        key = replicate_prediction_key(prediction["id"])
        await self._objects.put(key, data, REPLICATE_PREDICTION_CONTENT_TYPE)
        logger.info("replicate webhook: prediction %s %s", prediction["id"], prediction["status"])


def _prediction_of(body: bytes) -> dict[str, Any] | None:
    """The fields kept of a signed delivery, or None when it is no prediction."""
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    if not isinstance(payload, dict):
        return None
    prediction_id, status = payload.get("id"), payload.get("status")
    if not isinstance(prediction_id, str) or not isinstance(status, str):
        return None
    try:
        replicate_prediction_key(prediction_id)
    except ValueError:
        return None
    return {name: payload.get(name) for name in _KEPT_FIELDS}


def delivered_prediction_lookup(
    objects: ObjectStore,
) -> Callable[[str], Coroutine[Any, Any, dict[str, Any] | None]]:
    """What a decoder gives its Replicate engine: a prediction's delivered JSON, None until its
    webhook has been received (raises when the store cannot be read). A delivery is deleted once
    read; one nobody reads (its prediction finished in the create call, or a poll found it first)
    is deleted by the conductors' retention sweep a day later."""

    async def delivered(prediction_id: str) -> dict[str, Any] | None:
        key = replicate_prediction_key(prediction_id)
        try:
            data = await objects.get(key)
        except KeyError:
            return None
        # Read once, by the render that waits for it: nothing else needs it afterwards.
        await objects.delete_prefix(key)
        found = json.loads(data)
        return found if isinstance(found, dict) else None

    return delivered
