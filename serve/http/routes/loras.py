"""The LoRA registry, per owner: upload (multipart, capped while it streams), list, delete."""

from __future__ import annotations

from fastapi import APIRouter, File, Form, Path, UploadFile
from fastapi.responses import Response

from serve.schemas import LoraList, LoraOut

from ..auth import Owner
from ..deps import Services

router = APIRouter(tags=["loras"])


@router.post("/v1/loras", status_code=201, response_model=LoraOut)
async def upload_lora(
    services: Services,
    owner: Owner,
    id: str = Form(..., max_length=64, description="The id requests will use in `lora.id`."),
    file: UploadFile = File(..., description="A pytorch_lora_weights.safetensors file."),
    replace: bool = Form(False, description="Replace your LoRA of this id; without it, a 409."),
) -> LoraOut:
    """Store a LoRA that only your key can use, list or delete. 409 `lora_exists` for an id you
    already have (unless `replace`) or that a shared LoRA has."""
    # The body was capped as it streamed (serve.http.guard); Starlette spooled it to disk.
    return await services.loras.register(owner, id, await file.read(), replace=replace)


@router.get("/v1/loras", response_model=LoraList)
async def list_loras(services: Services, owner: Owner) -> LoraList:
    """Your LoRAs (`scope: own`) and the operator's (`scope: shared`, read-only)."""
    return LoraList(loras=await services.loras.list(owner))


@router.delete("/v1/loras/{lora_id}", status_code=204)
async def delete_lora(
    services: Services, owner: Owner, lora_id: str = Path(..., max_length=128)
) -> Response:
    """Delete one of your LoRAs. 403 for a shared one; 404 for any id you do not have."""
    await services.loras.delete(owner, lora_id)
    return Response(status_code=204)
