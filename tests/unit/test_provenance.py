"""C2PA content credentials: a dev chain signs real encoded audio in every delivery format, the
reference reader validates it, tampering is caught, and the audio is untouched."""

from __future__ import annotations

import datetime
import io
import json
import stat
import time
from pathlib import Path
from typing import Any

import c2pa
import numpy as np
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pipeline.encode import AUDIO_FORMATS, CONTENT_TYPES, decode_audio, encode_audio
from pipeline.provenance import (
    GENERATION_ASSERTION,
    TRAINED_ALGORITHMIC_MEDIA,
    SongCredentials,
    prompt_sha256,
    read_credentials,
    sign_audio,
    sniff_audio_format,
)
from serve.certs import ensure_dev_chain, write_dev_chain
from serve.cli import main
from serve.config import C2paConfig

SR = 48_000
PROMPT = "a sunny indie-pop song about sailing home"
HASH_MISMATCH_CODES = {"assertion.dataHash.mismatch", "assertion.bmffHash.mismatch"}


def _clip(duration_s: float, seed: int = 0) -> np.ndarray:
    """A chord with a little noise: tonal like music, and no byte pattern repeats in the file."""
    t = np.arange(int(duration_s * SR)) / SR
    chord = sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.18, 329.63))
    noise = np.random.default_rng(seed).standard_normal((2, t.size))
    return (0.15 * chord + 0.02 * noise).astype(np.float32)


def _credentials(**overrides: Any) -> SongCredentials:
    fields: dict[str, Any] = {
        "title": "Sailing Home",
        "model_id": "sketch",
        "model_version": "2025.06",
        "seed": 1234567,
        "prompt_sha256": prompt_sha256(PROMPT),
        "created": "2025-06-01T12:00:00+00:00",
        "loudness_lufs": -14.02,
        "songserve_version": "0.1.0",
        "lora_id": "lofi-tape",
    }
    return SongCredentials(**(fields | overrides))


def _reference_store(data: bytes, fmt: str) -> dict[str, Any]:
    """The manifest store as the reference reader (c2pa.Reader) reports it."""
    with c2pa.Reader(CONTENT_TYPES[fmt], io.BytesIO(data)) as reader:
        store: dict[str, Any] = json.loads(reader.json())
    return store


def _tampered(signed: bytes, unsigned: bytes) -> bytes:
    """`signed` with 64 bytes of its audio payload inverted.

    The payload is located by content: signing keeps the encoded audio bytes as they are, so a
    window from 70 % into the unsigned file occurs exactly once in the signed one.
    """
    start = int(len(unsigned) * 0.7)
    window = unsigned[start : start + 64]
    assert signed.count(window) == 1
    offset = signed.index(window)
    damaged = bytearray(signed)
    damaged[offset : offset + 64] = bytes(b ^ 0xFF for b in window)
    return bytes(damaged)


@pytest.fixture(scope="module")
def signer_config(tmp_path_factory: pytest.TempPathFactory) -> C2paConfig:
    certs = tmp_path_factory.mktemp("certs")
    config = C2paConfig(
        cert_path=str(certs / "chain.pem"), key_path=str(certs / "signer.key"), algorithm="es256"
    )
    write_dev_chain(config.cert_path, config.key_path, algorithm="es256")
    return config


@pytest.fixture(scope="module")
def unsigned() -> dict[str, bytes]:
    audio = _clip(2.0)
    return {fmt: encode_audio(audio, SR, fmt, bitrate_kbps=192) for fmt in AUDIO_FORMATS}


@pytest.fixture(scope="module")
def signed(unsigned: dict[str, bytes], signer_config: C2paConfig) -> dict[str, bytes]:
    return {
        fmt: sign_audio(data, fmt, _credentials(), signer_config) for fmt, data in unsigned.items()
    }


# -- the development chain -----------------------------------------------------------------------


def test_dev_chain_is_a_root_and_a_c2pa_signer_with_a_private_key(
    signer_config: C2paConfig,
) -> None:
    key_path = Path(signer_config.key_path)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert key_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8
    signer, root = x509.load_pem_x509_certificates(Path(signer_config.cert_path).read_bytes())

    signer.verify_directly_issued_by(root)
    root.verify_directly_issued_by(root)
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    constraints = signer.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert not constraints.ca
    usage = signer.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and not usage.value.key_cert_sign
    ekus = signer.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.EMAIL_PROTECTION in ekus
    assert ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in ekus
    organization = signer.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value
    assert organization == "songserve development"
    assert signer.issuer == root.subject != signer.subject
    lifetime = signer.not_valid_after_utc - signer.not_valid_before_utc
    assert datetime.timedelta(days=360) <= lifetime <= datetime.timedelta(days=370)
    assert signer.not_valid_before_utc <= datetime.datetime.now(datetime.UTC)


@pytest.mark.parametrize("algorithm", ["es384", "ps256", "ed25519"])
def test_every_configured_algorithm_signs_valid_credentials(
    algorithm: str, tmp_path: Path, unsigned: dict[str, bytes]
) -> None:
    config = C2paConfig(
        cert_path=str(tmp_path / "chain.pem"),
        key_path=str(tmp_path / "signer.key"),
        algorithm=algorithm,  # type: ignore[arg-type]
    )
    write_dev_chain(config.cert_path, config.key_path, algorithm=config.algorithm)
    report = read_credentials(sign_audio(unsigned["wav"], "wav", _credentials(), config), "wav")
    assert report["valid"], report["errors"]
    assert report["manifest"]["signer"]["algorithm"].lower() == algorithm


def test_ensure_dev_chain_writes_only_when_both_files_are_missing(tmp_path: Path) -> None:
    config = C2paConfig(
        cert_path=str(tmp_path / "certs" / "chain.pem"),
        key_path=str(tmp_path / "certs" / "signer.key"),
    )
    assert not ensure_dev_chain(config.model_copy(update={"create_dev_chain": False}))
    assert not Path(config.cert_path).exists()

    assert ensure_dev_chain(config)
    chain = Path(config.cert_path).read_bytes()
    assert not ensure_dev_chain(config)
    assert Path(config.cert_path).read_bytes() == chain  # an existing chain is kept

    Path(config.key_path).unlink()
    with pytest.raises(FileNotFoundError, match="key not found"):
        ensure_dev_chain(config)


def test_cli_certs_dev_writes_a_chain_and_says_it_is_for_development(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "certs"
    assert main(["certs", "dev", "--dir", str(target)]) == 0
    out = capsys.readouterr().out
    assert str(target / "chain.pem") in out and str(target / "signer.key") in out
    assert "development only" in out
    assert stat.S_IMODE((target / "signer.key").stat().st_mode) == 0o600
    assert len(x509.load_pem_x509_certificates((target / "chain.pem").read_bytes())) == 2

    key = (target / "signer.key").read_bytes()
    assert main(["certs", "dev", "--dir", str(target)]) == 1  # never replaces a key silently
    assert "--force" in capsys.readouterr().err
    assert (target / "signer.key").read_bytes() == key
    assert main(["certs", "dev", "--dir", str(target), "--force"]) == 0
    assert (target / "signer.key").read_bytes() != key


# -- signing and reading -------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", AUDIO_FORMATS)
def test_reference_reader_validates_signed_file(fmt: str, signed: dict[str, bytes]) -> None:
    store = _reference_store(signed[fmt], fmt)
    # A development chain is on no trust list: valid, not trusted.
    assert store["validation_state"] == "Valid"
    manifest = store["manifests"][store["active_manifest"]]
    assertions = {item["label"]: item["data"] for item in manifest["assertions"]}
    (created,) = assertions["c2pa.actions.v2"]["actions"]
    assert created["action"] == "c2pa.created"
    assert created["digitalSourceType"] == TRAINED_ALGORITHMIC_MEDIA
    assert created["softwareAgent"] == {"name": "songserve", "version": "0.1.0"}
    generation = assertions[GENERATION_ASSERTION]
    assert generation["model_id"] == "sketch" and generation["seed"] == 1234567
    assert manifest["title"] == "Sailing Home"


@pytest.mark.parametrize("fmt", AUDIO_FORMATS)
def test_read_credentials_summarises_a_signed_file(fmt: str, signed: dict[str, bytes]) -> None:
    report = read_credentials(signed[fmt], fmt)
    assert report["present"] and report["valid"] and not report["trusted"]
    assert report["validation_state"] == "Valid"
    assert report["errors"] == []
    manifest = report["manifest"]
    assert manifest["generation"] == {
        "model_id": "sketch",
        "model_version": "2025.06",
        "seed": 1234567,
        "prompt_sha256": prompt_sha256(PROMPT),
        "lora_id": "lofi-tape",
        "created": "2025-06-01T12:00:00+00:00",
        "loudness_lufs": -14.02,
        "songserve_version": "0.1.0",
    }
    assert [action["action"] for action in manifest["actions"]] == ["c2pa.created"]
    assert manifest["signer"]["subject"] == (
        "O=songserve development, CN=songserve development signer"
    )
    assert manifest["signer"]["issuer"] == (
        "O=songserve development, CN=songserve development root CA"
    )
    assert PROMPT.encode() not in signed[fmt]


@pytest.mark.parametrize("fmt", AUDIO_FORMATS)
def test_signed_file_decodes_to_the_same_audio(
    fmt: str, signed: dict[str, bytes], unsigned: dict[str, bytes]
) -> None:
    before, rate_before = decode_audio(unsigned[fmt])
    after, rate_after = decode_audio(signed[fmt])
    assert rate_after == rate_before == SR
    np.testing.assert_array_equal(after, before)


@pytest.mark.parametrize("fmt", AUDIO_FORMATS)
def test_tampered_audio_fails_validation(
    fmt: str, signed: dict[str, bytes], unsigned: dict[str, bytes]
) -> None:
    tampered = _tampered(signed[fmt], unsigned[fmt])
    assert _reference_store(tampered, fmt)["validation_state"] == "Invalid"
    report = read_credentials(tampered, fmt)
    assert report["present"] and not report["valid"]
    assert {error["code"] for error in report["errors"]} & HASH_MISMATCH_CODES


@pytest.mark.parametrize("fmt", AUDIO_FORMATS)
def test_damaged_manifest_reads_as_invalid(fmt: str, signed: dict[str, bytes]) -> None:
    damaged = bytearray(signed[fmt])
    start = signed[fmt].index(GENERATION_ASSERTION.encode()) + 24
    damaged[start : start + 16] = bytes(b ^ 0xFF for b in damaged[start : start + 16])
    report = read_credentials(bytes(damaged), fmt)
    assert not report["valid"] and report["errors"]


@pytest.mark.parametrize("fmt", AUDIO_FORMATS)
def test_unsigned_file_reads_as_without_credentials(fmt: str, unsigned: dict[str, bytes]) -> None:
    assert read_credentials(unsigned[fmt], fmt) == {
        "present": False,
        "valid": False,
        "trusted": False,
        "validation_state": None,
        "manifest": None,
        "errors": [],
    }


def test_read_credentials_does_not_raise_on_garbage() -> None:
    report = read_credentials(b"not audio at all " * 64)
    assert not report["present"] and not report["valid"] and report["manifest"] is None


def test_sign_audio_names_the_fix_for_a_missing_chain(
    tmp_path: Path, unsigned: dict[str, bytes]
) -> None:
    config = C2paConfig(cert_path=str(tmp_path / "no.pem"), key_path=str(tmp_path / "no.key"))
    with pytest.raises(FileNotFoundError, match="songserve certs dev"):
        sign_audio(unsigned["wav"], "wav", _credentials(), config)


def test_sign_audio_refuses_unknown_format(
    signer_config: C2paConfig, unsigned: dict[str, bytes]
) -> None:
    with pytest.raises(ValueError, match="ogg"):
        sign_audio(unsigned["wav"], "ogg", _credentials(), signer_config)  # type: ignore[arg-type]


def test_credentials_refuse_a_raw_prompt_and_a_naive_timestamp() -> None:
    with pytest.raises(ValueError, match="prompt_sha256"):
        _credentials(prompt_sha256=PROMPT)
    with pytest.raises(ValueError, match="time zone"):
        _credentials(created="2025-06-01T12:00:00")


# -- format sniffing -----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", AUDIO_FORMATS)
def test_sniff_recognises_unsigned_and_signed_files(
    fmt: str, signed: dict[str, bytes], unsigned: dict[str, bytes]
) -> None:
    assert sniff_audio_format(unsigned[fmt]) == fmt
    # c2pa puts an ID3 tag in front of signed FLAC as well as MP3.
    assert sniff_audio_format(signed[fmt]) == fmt


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage " * 16,
        b"RIFF\x00\x00\x00\x00AVI LIST",  # RIFF, not WAVE
        b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2",  # MP4 video, no M4A brand
        b"\xff\xf1\x50\x80\x02\x1f\xfc",  # AAC ADTS header: layer 00
        b"ID3\x04\x00\x00\x00\x00\x00\x02\x00\x00",  # an ID3 tag with nothing after it
        b"OggS\x00\x02",
    ],
)
def test_sniff_rejects_other_data(data: bytes) -> None:
    assert sniff_audio_format(data) is None


# -- cost ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["m4a", "mp3"])
def test_signing_a_180_s_song_takes_well_under_a_second(
    fmt: str, signer_config: C2paConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    # Signing cost follows the file's size (c2pa hashes every byte). A mono clip at 192 kbps
    # is as large as a stereo one (4.3 MB for 180 s) and encodes in half the time.
    data = encode_audio(_clip(180.0, seed=1)[:1], SR, fmt, bitrate_kbps=192)
    assert len(data) > 4_000_000
    started = time.perf_counter()
    signed_song = sign_audio(data, fmt, _credentials(), signer_config)
    elapsed_s = time.perf_counter() - started
    with capsys.disabled():
        print(f"\nsign_audio 180 s {fmt} ({len(data) / 1e6:.1f} MB): {elapsed_s:.3f} s")
    assert read_credentials(signed_song, fmt)["valid"]
    assert elapsed_s < 1.0
