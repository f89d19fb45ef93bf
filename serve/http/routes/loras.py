"""The LoRA registry: upload (multipart, capped while it streams), list, delete."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, File, Form, Path, UploadFile
from fastapi.responses import Response

from serve.schemas import LoraList, LoraOut

from ..deps import Services

router = APIRouter(tags=["loras"])


@router.post("/v1/loras", status_code=201, response_model=LoraOut)
async def upload_lora(
    services: Services,
    id: str = Form(..., max_length=64, description="The id requests will use in `lora.id`."),
    file: UploadFile = File(..., description="A pytorch_lora_weights.safetensors file."),
) -> LoraOut:
    # The body was capped as it streamed (serve.http.guard); Starlette spooled it to disk.
    info = await services.loras.register(id, await file.read())
    return LoraOut.model_validate(asdict(info))


@router.get("/v1/loras", response_model=LoraList)
async def list_loras(services: Services) -> LoraList:
    infos = await services.loras.list()
    return LoraList(loras=[LoraOut.model_validate(asdict(info)) for info in infos])


@router.delete("/v1/loras/{lora_id}", status_code=204)
async def delete_lora(services: Services, lora_id: str = Path(..., max_length=128)) -> Response:
    await services.loras.delete(lora_id)
    return Response(status_code=204)
