"""The LoRA registry as the API offers it: upload (validated against the base checkpoint off the
event loop), list, delete, and the operator's preloaded LoRAs registered at start."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from serve.http.errors import ApiError

if TYPE_CHECKING:
    from serve.config import AppConfig
    from serve.loras import LoraInfo, LoraRegistry, LoraValidator

logger = logging.getLogger("ray.serve")


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
            from deployments.ace_step import lora_validator

            self._validator = lora_validator(checkpoint, max_rank=self._config.loras.max_rank)
        return self._validator

    async def register(self, lora_id: str, weights: bytes) -> LoraInfo:
        # The first call imports torch and reads the base checkpoint: not on the event loop.
        validate = await asyncio.to_thread(self._validate)
        limit = self._config.loras.max_upload_bytes
        if len(weights) > limit:
            raise ApiError(
                413,
                "request_too_large",
                f"LoRA files are limited to {limit} bytes (loras.max_upload_bytes)",
                "file",
            )
        try:
            return await self._registry.register(
                lora_id, weights, model="ace-step", validate=validate
            )
        except ValueError as error:
            field = "id" if "LoRA ids" in str(error) else "file"
            raise ApiError(422, "invalid_lora", str(error), field) from error

    async def list(self) -> list[LoraInfo]:
        return await self._registry.list()

    async def delete(self, lora_id: str) -> None:
        if not await self._registry.delete(lora_id):
            raise ApiError(404, "not_found", f"no LoRA with id {lora_id!r}", "id")

    async def preload(self) -> None:
        for lora in self._config.loras.preload:
            if await self._registry.get(lora.id) is not None:
                continue
            try:
                weights = await asyncio.to_thread(Path(lora.path).read_bytes)
                validate = await asyncio.to_thread(self._validate)
                await self._registry.register(lora.id, weights, model="ace-step", validate=validate)
                logger.info("registered LoRA %s from %s", lora.id, lora.path)
            except Exception as error:  # noqa: BLE001 - one bad file must not stop the others
                logger.error(
                    "loras.preload %s (%s) was not registered: %s", lora.id, lora.path, error
                )
