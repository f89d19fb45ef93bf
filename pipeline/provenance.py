"""C2PA content credentials for delivered audio: sign a file's bytes, read them back, sniff formats.

Pure-ish: bytes in, bytes out; no Ray, no global state. The signer's certificate chain and key are
read from the paths given on every call (cheap: a c2pa `Signer` is built in well under a
millisecond, so there is no cache to invalidate when certificates rotate). `c2pa` is imported
inside the functions that need it.

Sign the finished progressive file (m4a with `moov` first, mp3, flac, wav) and never re-encode
or remux it afterwards: the manifest hashes the exact bytes. Fragmented MP4 (HLS segments) cannot
be signed. A file signed with a development chain (`songserve certs dev`) validates as "Valid",
not "Trusted", because no trust list holds its root.

Where the manifest goes (c2pa-rs 0.91): wav appends a `C2PA` RIFF chunk; mp3 *and flac* get an
ID3v2 tag (GEOB frame) in front of the stream, so a signed FLAC file starts with "ID3", not
"fLaC" (FFmpeg and most players skip it); m4a gets a C2PA `uuid` box and a BMFF hash.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from pipeline.encode import CONTENT_TYPES

SignableFormat = Literal["m4a", "mp3", "flac", "wav"]

GENERATION_ASSERTION = "ai.songserve.generation"
TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA = (
    "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"
)
# Reported by every reader for a chain outside its trust list (every development chain): it is
# what separates "Valid" from "Trusted", not a sign of tampering, so it is not listed as an error.
_UNTRUSTED_CODE = "signingCredential.untrusted"
_VALID_STATES = ("Valid", "Trusted")
_ACTIONS_LABELS = ("c2pa.actions.v2", "c2pa.actions")
_SHA256_HEX_LENGTH = 64


@dataclass(frozen=True)
class SongCredentials:
    """What a song's manifest says about how it was made. The prompt itself never goes in.

    `prompt_sha256` is the hex SHA-256 of the UTF-8 prompt (`prompt_sha256(prompt)`); `created`
    is an ISO 8601 timestamp with a zone, e.g. "2025-06-01T12:00:00+00:00"; `loudness_lufs` is
    the measured integrated loudness of the delivered audio. A stem of a song says which
    (`stem`, e.g. "vocals") and how it was taken from the song (`stem_method`: "exact" when the
    model rendered that part on its own, else the separator, e.g. "htdemucs").
    """

    title: str
    model_id: str
    model_version: str
    seed: int
    prompt_sha256: str
    created: str
    loudness_lufs: float
    songserve_version: str
    lora_id: str | None = None
    stem: str | None = None
    stem_method: str | None = None
    edit: str | None = None  # extend, repaint or cover: made from `source`
    source: str | None = None  # what was edited, e.g. "songserve:song/<id>/variation/0"

    def __post_init__(self) -> None:
        digest = self.prompt_sha256
        if len(digest) != _SHA256_HEX_LENGTH or digest.strip("0123456789abcdef"):
            # Guards against the prompt itself ending up in a public manifest.
            raise ValueError(
                "prompt_sha256 must be 64 lowercase hex digits (use prompt_sha256(prompt)), "
                f"got {len(digest)} characters"
            )
        try:
            parsed = datetime.fromisoformat(self.created)
        except ValueError as error:
            raise ValueError(f"created must be an ISO 8601 timestamp: {error}") from None
        if parsed.tzinfo is None:
            raise ValueError(f"created needs a time zone (e.g. +00:00): {self.created!r}")


class SignerConfig(Protocol):
    """Where the signing chain lives; `serve.config.C2paConfig` is one."""

    @property
    def cert_path(self) -> str: ...
    @property
    def key_path(self) -> str: ...
    @property
    def algorithm(self) -> str: ...
    @property
    def tsa_url(self) -> str | None: ...


def prompt_sha256(prompt: str) -> str:
    """Hex SHA-256 of the UTF-8 prompt: what a manifest records instead of the prompt."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class SourceIngredient:
    """The file an edited song was made from, named in its manifest as its `parentOf`
    ingredient (c2pa keeps the source's own manifest with it, so the chain can be followed)."""

    title: str
    data: bytes
    fmt: str  # as `sniff_audio_format` names it (m4a, mp3, flac, wav)


SOURCE_INGREDIENT_LABEL = "source"


def manifest_definition(
    credentials: SongCredentials, fmt: SignableFormat, *, with_source: bool = False
) -> dict[str, Any]:
    """The manifest `sign_audio` asks c2pa to sign (c2pa adds the hash assertion itself).

    A new song is `c2pa.created`; an edit `with_source` is `c2pa.opened` (its source, the
    ingredient labelled SOURCE_INGREDIENT_LABEL), then `c2pa.edited` by a model, as C2PA
    describes a composite with trained algorithmic media."""
    software = {"name": "songserve", "version": credentials.songserve_version}
    generation = asdict(credentials)
    del generation["title"]
    if credentials.stem is None:  # a whole song's manifest says nothing of stems
        del generation["stem"], generation["stem_method"]
    if credentials.edit is None:  # nor of edits, unless it is one
        del generation["edit"], generation["source"]
    actions: list[dict[str, Any]] = [
        {
            "action": "c2pa.created",
            "when": credentials.created,
            "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA,
            "softwareAgent": software,
        }
    ]
    if with_source:
        actions = [
            {
                "action": "c2pa.opened",
                "when": credentials.created,
                "parameters": {"ingredientIds": [SOURCE_INGREDIENT_LABEL]},
            },
            {
                "action": "c2pa.edited",
                "when": credentials.created,
                "digitalSourceType": COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA,
                "softwareAgent": software,
                "description": f"{credentials.edit} by {credentials.model_id}",
            },
        ]
    return {
        "claim_generator_info": [software],
        "title": credentials.title,
        "format": _mime_type(fmt),
        "assertions": [
            {"label": "c2pa.actions.v2", "data": {"actions": actions}},
            {"label": GENERATION_ASSERTION, "data": generation},
        ],
    }


def sign_audio(
    data: bytes,
    fmt: SignableFormat,
    credentials: SongCredentials,
    signer_config: SignerConfig,
    source: SourceIngredient | None = None,
) -> bytes:
    """`data` (a whole progressive audio file of format `fmt`) with an embedded C2PA manifest.

    The manifest holds a `c2pa.actions.v2` assertion (`c2pa.created`, digital source type
    trainedAlgorithmicMedia, software agent songserve) and the `ai.songserve.generation`
    assertion (`credentials` but the title, which is the manifest's title). The audio bytes are
    kept as they are. With `signer_config.tsa_url` set, c2pa-rs asks that time-stamp authority
    over the network while signing.

    An edit names its `source` file as its parentOf ingredient (see `manifest_definition`).

    Raises FileNotFoundError when the certificate chain or key is missing, ValueError for an
    unknown format, a chain or key c2pa refuses, or data that is not a file of format `fmt`.
    """
    import json

    import c2pa

    mime = _mime_type(fmt)
    signer = _signer(signer_config)
    try:
        builder = c2pa.Builder(
            manifest_definition(credentials, fmt, with_source=source is not None)
        )
        if source is not None:
            ingredient = {
                "title": source.title,
                "relationship": "parentOf",
                "label": SOURCE_INGREDIENT_LABEL,
            }
            builder.add_ingredient(
                json.dumps(ingredient), _mime_type(source.fmt), io.BytesIO(source.data)
            )
        signed = io.BytesIO()
        with signer:
            builder.sign(signer, mime, io.BytesIO(data), signed)
    except c2pa.C2paError as error:
        raise ValueError(f"C2PA signing of a {fmt} file failed: {error}") from error
    return signed.getvalue()


def read_credentials(data: bytes, fmt: SignableFormat | None = None) -> dict[str, Any]:
    """What a file's C2PA manifest says, and whether it still matches the file.

    Returns {"present", "valid", "trusted", "validation_state", "manifest", "errors"}:
    `present` False (and `manifest` None) when the file carries no manifest or is not an asset
    c2pa can parse; `valid` True when the signature and every hash check out (state "Valid" or
    "Trusted"); `trusted` True only for a chain on the reader's trust list; `errors` the failed
    validation checks as {"code", "explanation"} (tampered audio: `assertion.dataHash.mismatch`
    or, for m4a, `assertion.bmffHash.mismatch`), or a single {"code": "c2pa.error"} entry when
    c2pa could not read the manifest at all. An untrusted chain is not an error (see `trusted`).
    `manifest` summarises the active manifest (see `_summary`). Never raises for bad data
    (ValueError only for an unknown `fmt`).

    `fmt` is a hint; c2pa detects the container from the bytes either way.
    """
    import c2pa

    mime = _mime_type(fmt) if fmt is not None else ""
    result: dict[str, Any] = {
        "present": False,
        "valid": False,
        "trusted": False,
        "validation_state": None,
        "manifest": None,
        "errors": [],
    }
    try:
        with c2pa.Reader(mime or None, io.BytesIO(data)) as reader:
            store = json.loads(reader.json())
            certificates = _certificate_names(reader)
    except c2pa.C2paError as error:
        if isinstance(error, c2pa.C2paError.ManifestNotFound):
            return result
        # Verify, Manifest, Decoding, ...: there is a manifest, but it is damaged. Other (the
        # asset could not be parsed), NotSupported, Io: not an asset c2pa understands.
        unreadable_asset = (c2pa.C2paError.Other, c2pa.C2paError.NotSupported, c2pa.C2paError.Io)
        result["present"] = not isinstance(error, unreadable_asset)
        result["errors"] = [{"code": "c2pa.error", "explanation": str(error)}]
        return result

    state = store.get("validation_state")
    active = store.get("manifests", {}).get(store.get("active_manifest"))
    result.update(
        present=active is not None,
        validation_state=state,
        valid=active is not None and state in _VALID_STATES,
        trusted=state == "Trusted",
        manifest=_summary(active, certificates.get(store.get("active_manifest")))
        if active is not None
        else None,
        errors=[
            {"code": item.get("code"), "explanation": item.get("explanation")}
            for item in _failures(store)
            if item.get("code") != _UNTRUSTED_CODE
        ],
    )
    return result


def sniff_audio_format(data: bytes) -> SignableFormat | None:
    """The delivery format of a whole file from its first bytes, or None for anything else.

    wav: RIFF....WAVE. flac: fLaC, also behind ID3v2 tags (as C2PA-signed FLAC is). mp3: an
    MPEG audio frame header, at the start or behind ID3v2 tags. m4a: an `ftyp` box whose major
    or compatible brands include "M4A ".
    """
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "wav"
    if len(data) >= 12 and data[4:8] == b"ftyp":
        box_size = int.from_bytes(data[:4], "big")
        brands = data[8 : min(max(box_size, 12), len(data))]
        # major brand, minor version, then compatible brands, each four bytes
        candidates = [brands[:4]] + [brands[k : k + 4] for k in range(8, len(brands) - 3, 4)]
        return "m4a" if b"M4A " in candidates else None
    offset = _after_id3_tags(data)
    if data[offset : offset + 4] == b"fLaC":
        return "flac"
    if _is_mpeg_audio_frame(data[offset : offset + 4]):
        return "mp3"
    return None


# -- helpers -----------------------------------------------------------------------------------


def _mime_type(fmt: str) -> str:
    if fmt not in CONTENT_TYPES:
        raise ValueError(f"cannot sign {fmt!r} audio; expected one of {tuple(CONTENT_TYPES)}")
    return CONTENT_TYPES[fmt]


def _signer(config: SignerConfig) -> Any:
    """A c2pa Signer for the chain and key `config` names (built fresh: it costs < 1 ms)."""
    import c2pa

    cert_path, key_path = Path(config.cert_path), Path(config.key_path)
    for path, what in ((cert_path, "certificate chain"), (key_path, "private key")):
        if not path.is_file():
            raise FileNotFoundError(
                f"C2PA {what} not found at {path}: set postprocess.c2pa.cert_path/key_path, "
                "or run `songserve certs dev` for a development chain"
            )
    info = c2pa.C2paSignerInfo(
        config.algorithm.lower().encode(),
        cert_path.read_bytes(),
        key_path.read_bytes(),
        config.tsa_url,
    )
    try:
        return c2pa.Signer.from_info(info)
    except c2pa.C2paError as error:
        raise ValueError(
            f"c2pa refused the {config.algorithm} signer from {cert_path} and {key_path} "
            f"(does the key match the first certificate and the algorithm?): {error}"
        ) from error


def _failures(store: dict[str, Any]) -> list[dict[str, Any]]:
    results = store.get("validation_results")
    if isinstance(results, dict):
        failures = list((results.get("activeManifest") or {}).get("failure") or [])
        for delta in results.get("ingredientDeltas") or []:
            failures += (delta.get("validationDeltas") or {}).get("failure") or []
        return failures
    return list(store.get("validation_status") or [])


def _certificate_names(reader: Any) -> dict[str, dict[str, str]]:
    """Manifest label -> {"issuer", "subject"} distinguished names, from the crJSON view.

    Best effort: an empty mapping when this c2pa build cannot produce crJSON.
    """
    import c2pa

    try:
        manifests = json.loads(reader.crjson()).get("manifests") or []
    except (c2pa.C2paError, ValueError, AttributeError):
        return {}
    names: dict[str, dict[str, str]] = {}
    for manifest in manifests:
        info = (manifest.get("signature") or {}).get("certificateInfo") or {}
        names[manifest.get("label", "")] = {
            role: ", ".join(f"{key}={value}" for key, value in (info.get(role) or {}).items())
            for role in ("issuer", "subject")
        }
    return names


def _summary(manifest: dict[str, Any], certificate: dict[str, str] | None) -> dict[str, Any]:
    """The active manifest, cut down to what a verify endpoint shows."""
    assertions = {item.get("label"): item.get("data") for item in manifest.get("assertions", [])}
    actions: list[dict[str, Any]] = next(
        (assertions[label].get("actions", []) for label in _ACTIONS_LABELS if label in assertions),
        [],
    )
    signature = manifest.get("signature_info") or {}
    certificate = certificate or {}
    return {
        "label": manifest.get("label"),
        "title": manifest.get("title"),
        "claim_generator": manifest.get("claim_generator_info"),
        "actions": actions,
        "generation": assertions.get(GENERATION_ASSERTION),
        # What it was made from (an edit's source): each with the title of its own manifest.
        "ingredients": [
            {
                "title": ingredient.get("title"),
                "relationship": ingredient.get("relationship"),
                "format": ingredient.get("format"),
                "manifest": ingredient.get("active_manifest"),
            }
            for ingredient in manifest.get("ingredients", [])
        ],
        "signer": {
            "issuer": certificate.get("issuer") or signature.get("issuer"),
            "subject": certificate.get("subject") or signature.get("common_name"),
            "issuer_organization": signature.get("issuer"),
            "common_name": signature.get("common_name"),
            "algorithm": signature.get("alg"),
            "serial_number": signature.get("cert_serial_number"),
            "time": signature.get("time"),
        },
    }


def _after_id3_tags(data: bytes) -> int:
    """Offset of the first byte after any ID3v2 tags at the start of `data`."""
    offset = 0
    while data[offset : offset + 3] == b"ID3" and len(data) >= offset + 10:
        size_bytes = data[offset + 6 : offset + 10]
        if any(byte & 0x80 for byte in size_bytes):  # sizes are synchsafe: 7 bits a byte
            break
        size = 0
        for byte in size_bytes:
            size = (size << 7) | byte
        has_footer = data[offset + 5] & 0x10
        offset += 10 + size + (10 if has_footer else 0)
    return offset


def _is_mpeg_audio_frame(header: bytes) -> bool:
    """Whether four bytes are a plausible MPEG-1/2/2.5 Layer I-III frame header."""
    if len(header) < 4 or header[0] != 0xFF or header[1] & 0xE0 != 0xE0:
        return False
    version = (header[1] >> 3) & 0b11
    layer = (header[1] >> 1) & 0b11
    bitrate_index = header[2] >> 4
    rate_index = (header[2] >> 2) & 0b11
    # 01 is a reserved version; layer 00 is reserved (and is what AAC ADTS headers carry).
    return version != 0b01 and layer != 0b00 and bitrate_index != 0b1111 and rate_index != 0b11
