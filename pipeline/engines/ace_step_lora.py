"""ACE-Step LoRA files: PEFT adapters on the DiT's attention projections, in diffusers'
`pytorch_lora_weights.safetensors` layout. Checked from the safetensors header alone (no tensor
is read, nothing is unpickled) against the base checkpoint's modules, before the registry stores
one or a decoder loads it."""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
import struct
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any, BinaryIO

LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
MAX_LORA_FILE_BYTES = 1 << 30
"""Default size limit of `validate_lora_file` (the registry passes `loras.max_upload_bytes`):
rank 64 on every attention projection of the XL DiT in float32 is about 0.35 GB."""
MAX_LORA_RANK = 1024
"""Rank limit `load_lora` applies by default: the largest `loras.max_rank` allows. The registry
enforces the configured limit when a LoRA is uploaded."""
LORA_TARGET_SUFFIXES = ("to_q", "to_k", "to_v", "to_out.0")
_SAFETENSORS_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2}
_MAX_SAFETENSORS_HEADER_BYTES = 100 * 1024 * 1024  # the format's own limit
_LORA_KEY = re.compile(r"^transformer\.(?P<module>.+)\.lora_(?P<part>[AB])\.weight$")


def lora_target_modules(checkpoint: Path) -> dict[str, tuple[int, int]]:
    """The attention projections of a checkpoint's transformer a LoRA may adapt, as
    {module name: (in_features, out_features)}, read without loading any weights: the
    transformer is built from `checkpoint/transformer/config.json` on the meta device.

    Raises ValueError when the checkpoint has no readable transformer config.
    """
    import torch
    from diffusers import AceStepTransformer1DModel

    config_path = Path(checkpoint) / "transformer" / "config.json"
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read the transformer config {config_path}: {exc}") from exc
    with torch.device("meta"):
        transformer = AceStepTransformer1DModel.from_config(config)
    return linear_targets(transformer)


def adapter_name(lora_id: str) -> str:
    """The PEFT adapter name of a LoRA: LoRA refs hold `/` and ids may hold `.`, which PEFT
    refuses in a module name; a digest is safe and as unique."""
    return "lora_" + hashlib.sha256(lora_id.encode()).hexdigest()[:24]


def linear_targets(transformer: Any) -> dict[str, tuple[int, int]]:
    import torch

    targets: dict[str, tuple[int, int]] = {}
    for name, module in transformer.named_modules():
        # A model with LoRAs loaded wraps each target: the original Linear is `<name>.base_layer`.
        name = name.removesuffix(".base_layer")
        if isinstance(module, torch.nn.Linear) and name.endswith(LORA_TARGET_SUFFIXES):
            targets[name] = (module.in_features, module.out_features)
    return targets


def _read_safetensors_header(
    handle: BinaryIO, size: int, label: str, max_bytes: int
) -> dict[str, Any]:
    """The JSON header of a safetensors stream of `size` bytes, checked for consistency (every
    tensor a float, its byte range inside the data); `label` names the file in errors."""
    if size > max_bytes:
        raise ValueError(f"{label} is {size} bytes; the limit is {max_bytes}")
    prefix = handle.read(8)
    if prefix[:2] == b"PK" or prefix[:1] == b"\x80":
        raise ValueError(
            f"{label} is a pickled PyTorch checkpoint, not safetensors; pickles can run code on "
            "load and are refused: convert it with safetensors.torch.save_file"
        )
    if len(prefix) < 8:
        raise ValueError(f"{label} is not a safetensors file (too short)")
    (header_length,) = struct.unpack("<Q", prefix)
    if header_length > min(_MAX_SAFETENSORS_HEADER_BYTES, size - 8):
        raise ValueError(f"{label} is not a safetensors file (bad header length)")
    raw = handle.read(header_length)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{label} is not a safetensors file (bad header)") from exc
    if not isinstance(header, dict):
        raise ValueError(f"{label} is not a safetensors file (bad header)")
    data_bytes = size - 8 - header_length
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        try:
            dtype, shape, (start, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
        except (TypeError, KeyError, ValueError) as exc:
            raise ValueError(f"{label}: malformed header entry {key!r}") from exc
        if dtype not in _SAFETENSORS_DTYPE_BYTES:
            raise ValueError(f"{label}: tensor {key!r} has dtype {dtype}, not a float")
        expected = math.prod(shape) * _SAFETENSORS_DTYPE_BYTES[dtype]
        if not (0 <= start <= end <= data_bytes and end - start == expected):
            raise ValueError(f"{label}: tensor {key!r} has inconsistent offsets")
    return header


def validate_lora_file(
    path: Path,
    *,
    max_rank: int,
    expected_modules: Mapping[str, tuple[int, int]] | Collection[str],
    max_bytes: int = MAX_LORA_FILE_BYTES,
) -> dict[str, Any]:
    """Check a LoRA file before it is stored or loaded; reads only the file's header.

    Accepts the diffusers PEFT format AceStepPipeline.load_lora_weights reads: a safetensors file
    (pickles and anything else are refused from the header bytes, never unpickled) of at most
    `max_bytes`, whose every tensor is `transformer.<module>.lora_A.weight` ([rank, in]) or
    `...lora_B.weight` ([out, rank]) with both halves present for each module, `<module>` one of
    `expected_modules` (names, or {name: (in_features, out_features)} to check shapes too — see
    `lora_target_modules` and `AceStepSongModel.lora_target_modules`), and rank ≤ `max_rank`.
    `path` may be the file or a directory holding `pytorch_lora_weights.safetensors`.

    Returns {"rank": largest rank, "keys": tensor count, "modules": sorted module names}.
    Raises ValueError naming the file and the problem otherwise.
    """
    path = Path(path)
    if path.is_dir():
        path = path / LORA_WEIGHT_NAME
    if not path.is_file():
        raise ValueError(f"LoRA file {path} does not exist")
    with path.open("rb") as handle:
        header = _read_safetensors_header(
            handle, path.stat().st_size, f"LoRA file {path}", max_bytes
        )
    return _check_lora_header(header, f"LoRA file {path}", max_rank, expected_modules)


def lora_validator(
    checkpoint: str | Path, *, max_rank: int, max_bytes: int = MAX_LORA_FILE_BYTES
) -> Callable[[bytes], dict[str, Any]]:
    """A validator for uploaded LoRA bytes against `checkpoint`'s transformer (module names and
    shapes read once, on the meta device: no weights are loaded). The returned callable applies
    the checks of `validate_lora_file` to an in-memory file and returns its report."""
    expected = lora_target_modules(Path(checkpoint).expanduser())

    def validate(weights: bytes) -> dict[str, Any]:
        label = "the LoRA file"
        header = _read_safetensors_header(io.BytesIO(weights), len(weights), label, max_bytes)
        return _check_lora_header(header, label, max_rank, expected)

    return validate


def _check_lora_header(
    header: dict[str, Any],
    label: str,
    max_rank: int,
    expected_modules: Mapping[str, tuple[int, int]] | Collection[str],
) -> dict[str, Any]:
    tensors = {key: entry for key, entry in header.items() if key != "__metadata__"}
    if not tensors:
        raise ValueError(f"{label} holds no tensors")

    shapes: dict[str, dict[str, list[int]]] = {}
    for key, entry in tensors.items():
        match = _LORA_KEY.match(key)
        if match is None:
            raise ValueError(
                f"{label}: key {key!r} is not a diffusers LoRA key "
                "(transformer.<module>.lora_A.weight / lora_B.weight)"
            )
        module = match["module"]
        if module not in expected_modules:
            raise ValueError(
                f"{label}: key {key!r} targets {module!r}, which is not an attention "
                "projection of this model's transformer (wrong base model?)"
            )
        shape = list(entry["shape"])
        if len(shape) != 2:
            raise ValueError(f"{label}: {key!r} has shape {shape}, expected 2-D")
        shapes.setdefault(module, {})[match["part"]] = shape

    rank = 0
    for module, parts in shapes.items():
        if set(parts) != {"A", "B"}:
            raise ValueError(f"{label}: {module!r} lacks its lora_A or lora_B half")
        (module_rank, in_features), (out_features, b_rank) = parts["A"], parts["B"]
        if module_rank != b_rank or module_rank < 1:
            raise ValueError(
                f"{label}: {module!r} has lora_A rank {module_rank} but lora_B rank {b_rank}"
            )
        if isinstance(expected_modules, Mapping) and (in_features, out_features) != tuple(
            expected_modules[module]
        ):
            raise ValueError(
                f"{label}: {module!r} maps {in_features}→{out_features} features, "
                f"the model's layer {expected_modules[module][0]}→"
                f"{expected_modules[module][1]} (trained for another model size?)"
            )
        if module_rank > max_rank:
            raise ValueError(
                f"{label}: rank {module_rank} (at {module!r}) exceeds the limit "
                f"{max_rank} (loras.max_rank)"
            )
        rank = max(rank, module_rank)
    return {"rank": rank, "keys": len(tensors), "modules": sorted(shapes)}
