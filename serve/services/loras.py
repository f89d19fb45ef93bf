"""The LoRA registry as the API offers it, per owner: upload into the caller's scope (validated
against the base checkpoint off the event loop), list the caller's own LoRAs and the shared ones,
delete the caller's own; and the operator's preloaded LoRAs, registered as shared at start.

Shared LoRAs are read-only to every caller; another owner's LoRAs are as good as absent (404,
never 403, so their ids are not revealed). An id names at most one LoRA a caller can use: an
upload may not take the id of a shared LoRA (see `serve.loras` for scopes and refs).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from serve.http.errors import ApiError
from serve.loras import LORA_ID_PATTERN, LORA_ID_RULE, SHARED_SCOPE, LoraRef
from serve.schemas import LoraOut

if TYPE_CHECKING:
    from serve.config import AppConfig
    from serve.loras import LoraInfo, LoraRegistry, LoraValidator

logger = logging.getLogger("ray.serve")


def lora_out(info: LoraInfo) -> LoraOut:
    """What the API shows of a LoRA to a caller who may use it (never its ref: that names the
    owner)."""
    shared = info.scope == SHARED_SCOPE
    return LoraOut(
        id=info.id,
        model=info.model,
        rank=info.rank,
        size_bytes=info.size_bytes,
        sha256=info.sha256,
        created_at=info.created_at,
        scope="shared" if shared else "own",
        read_only=shared,
    )


class LoraService:
    def __init__(self, config: AppConfig, registry: LoraRegistry) -> None:
        self._config = config
        self._registry = registry
        self._validator: LoraValidator | None = None

    def _validate(self) -> LoraValidator:
        """Checks uploads against the base checkpoint (imports torch on first use only)."""
        if self._validator is None:
            checkpoint = self._config.models.lora_checkpoint
            if checkpoint is None:
                raise ApiError(
                    409,
                    "no_lora_model",
                    "no pool on this server serves a model that takes LoRAs (models.pools)",
                    None,
                )
            from pipeline.engines.ace_step_lora import lora_validator

            self._validator = lora_validator(checkpoint, max_rank=self._config.loras.max_rank)
        return self._validator

    async def register(
        self, owner: str, lora_id: str, weights: bytes, *, replace: bool = False
    ) -> LoraOut:
        """Store a LoRA in `owner`'s scope. 409 when the id is taken (by the owner's own LoRA,
        unless `replace`; by a shared one, always) or the owner has `loras.max_per_owner`."""
        limit = self._config.loras.max_upload_bytes
        if len(weights) > limit:
            raise ApiError(
                413,
                "request_too_large",
                f"LoRA files are limited to {limit} bytes (loras.max_upload_bytes)",
                "file",
            )
        if not LORA_ID_PATTERN.match(lora_id):
            raise ApiError(422, "invalid_lora", LORA_ID_RULE, "id")
        ref = LoraRef.owned(owner, lora_id)
        await self._check_free(ref, replace=replace)
        # The first call imports torch and reads the base checkpoint: not on the event loop.
        validate = await asyncio.to_thread(self._validate)
        try:
            info = await self._registry.register(ref, weights, model="ace-step", validate=validate)
        except ValueError as error:
            raise ApiError(422, "invalid_lora", str(error), "file") from error
        return lora_out(info)

    async def _check_free(self, ref: LoraRef, *, replace: bool) -> None:
        """Whether `ref` may be stored. Checked before storing: two uploads of one new id at
        the same moment both pass, and the later one is kept (as with `replace`)."""
        if await self._registry.get(LoraRef.shared(ref.id)) is not None:
            raise ApiError(
                409,
                "lora_exists",
                f"{ref.id!r} is an operator LoRA (shared, read-only): use it as it is, or "
                "upload yours under another id",
                "id",
            )
        if await self._registry.get(ref) is not None:
            if replace:
                return
            raise ApiError(
                409,
                "lora_exists",
                f"you already have a LoRA {ref.id!r}: send replace=true to replace it, or "
                "choose another id",
                "id",
            )
        limit = self._config.loras.max_per_owner
        if await self._registry.count(ref.scope) >= limit:
            raise ApiError(
                409,
                "too_many_loras",
                f"you have {limit} LoRAs, the most this server keeps per owner "
                "(loras.max_per_owner): delete one first (DELETE /v1/loras/{id})",
                "id",
            )

    async def list(self, owner: str) -> list[LoraOut]:
        """The caller's own LoRAs, then the shared ones."""
        return [lora_out(info) for info in await self._registry.usable_by(owner)]

    async def delete(self, owner: str, lora_id: str) -> None:
        """Delete the caller's own LoRA; 403 for a shared one, 404 for any other id (another
        owner's included)."""
        if await self._registry.delete(LoraRef.owned(owner, lora_id)):
            return
        if await self._registry.get(LoraRef.shared(lora_id)) is not None:
            raise ApiError(
                403,
                "read_only",
                f"LoRA {lora_id!r} is shared: operators manage it (loras.preload), not the API",
                "id",
            )
        raise ApiError(404, "not_found", f"no LoRA with id {lora_id!r}", "id")

    async def preload(self) -> None:
        """Register `loras.preload` as shared LoRAs; ones already registered (in either layout,
        see `serve.loras`) are left as they are."""
        for lora in self._config.loras.preload:
            ref = LoraRef.shared(lora.id)
            if await self._registry.get(ref) is not None:
                continue
            try:
                weights = await asyncio.to_thread(Path(lora.path).read_bytes)
                validate = await asyncio.to_thread(self._validate)
                await self._registry.register(ref, weights, model="ace-step", validate=validate)
                logger.info("registered shared LoRA %s from %s", lora.id, lora.path)
            except Exception as error:  # noqa: BLE001 - one bad file must not stop the others
                logger.error(
                    "loras.preload %s (%s) was not registered: %s", lora.id, lora.path, error
                )
