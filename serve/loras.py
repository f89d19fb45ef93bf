"""The LoRA registry: adapters uploaded once, stored on the object store, loaded by any replica.

Each LoRA lives under `loras/<id>/`: `pytorch_lora_weights.safetensors` (the file decoders load)
and `meta.json` (what the API lists). Weights are validated before they are stored, so a decoder
never meets a file it cannot load: safetensors only, a size limit, every key a module of the base
model, rank within `loras.max_rank`.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from .store import ObjectStore

LORA_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
LORA_WEIGHTS_NAME = "pytorch_lora_weights.safetensors"

LoraValidator = Callable[[bytes], dict[str, Any]]
"""Checks a weights file against the base model; returns {"rank", "keys", ...} or raises
ValueError saying what is wrong."""


def lora_weights_key(lora_id: str) -> str:
    """Object-store key of a registered LoRA's weights."""
    return f"loras/{lora_id}/{LORA_WEIGHTS_NAME}"


def _meta_key(lora_id: str) -> str:
    return f"loras/{lora_id}/meta.json"


@dataclass(frozen=True)
class LoraInfo:
    id: str
    model: str
    rank: int
    size_bytes: int
    sha256: str
    created_at: float


class LoraRegistry:
    def __init__(self, objects: ObjectStore) -> None:
        self._objects = objects

    async def register(
        self, lora_id: str, weights: bytes, *, model: str, validate: LoraValidator
    ) -> LoraInfo:
        """Validate and store a LoRA (replacing one with the same id); raises ValueError."""
        if not LORA_ID_PATTERN.match(lora_id):
            raise ValueError(
                "LoRA ids are 1-64 characters of a-z, 0-9, '.', '_' or '-', starting with a "
                "letter or digit"
            )
        report = validate(weights)
        info = LoraInfo(
            id=lora_id,
            model=model,
            rank=int(report["rank"]),
            size_bytes=len(weights),
            sha256=hashlib.sha256(weights).hexdigest(),
            created_at=time.time(),
        )
        # Weights first: a listed LoRA always has its file.
        await self._objects.put(lora_weights_key(lora_id), weights, "application/octet-stream")
        await self._objects.put(
            _meta_key(lora_id), json.dumps(asdict(info)).encode(), "application/json"
        )
        return info

    async def get(self, lora_id: str) -> LoraInfo | None:
        if not LORA_ID_PATTERN.match(lora_id):
            return None
        try:
            return LoraInfo(**json.loads(await self._objects.get(_meta_key(lora_id))))
        except KeyError:
            return None

    async def list(self) -> list[LoraInfo]:
        keys = await self._objects.list_keys("loras/")
        infos = []
        for key in keys:
            if key.endswith("/meta.json"):
                info = await self.get(key.split("/")[1])
                if info is not None:
                    infos.append(info)
        return infos

    async def delete(self, lora_id: str) -> bool:
        if await self.get(lora_id) is None:
            return False
        await self._objects.delete_prefix(f"loras/{lora_id}")
        return True
