"""Development certificate chains for C2PA signing: a root CA and one signer it issued.

`songserve certs dev` and start-up (`postprocess.c2pa.create_dev_chain`) write one so that every
delivered file can carry content credentials on a laptop. Such a chain validates as "Valid",
never "Trusted": no trust list holds its root. Production uses a CA-issued chain.

Whatever the chain, the builder reads it once (`with_signing_chain`) and hands its PEM text to the
signing replicas inside their bound config, so a replica on any node signs without reading the
builder's disk (`private_signing_files` gives a signer that wants paths a private copy).

The signer certificate follows the C2PA certificate profile that c2pa-rs enforces when it
signs: X.509 v3, not a CA, a critical key usage with digitalSignature only, an extended key usage
of id-kp-emailProtection and id-kp-documentSigning (never anyExtendedKeyUsage), and an issuer
other than itself (c2pa-rs refuses a self-signed signer: "the certificate is invalid"). Subject
and authority key identifiers are added as any CA would.
"""

from __future__ import annotations

import datetime
import os
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

    from serve.config import C2paConfig

SigningAlgorithm = Literal["es256", "es384", "ps256", "ed25519"]

DEV_ORGANIZATION = "songserve development"
DEV_VALIDITY_DAYS = 365
ROOT_VALIDITY_DAYS = 3650
# id-kp-documentSigning (RFC 9336); cryptography has no name for it.
_DOCUMENT_SIGNING_OID = "1.3.6.1.5.5.7.3.36"
# Backdate notBefore so a clock a little behind the signing host still sees a valid cert.
_CLOCK_SKEW = datetime.timedelta(minutes=5)


def write_dev_chain(
    cert_path: str | Path, key_path: str | Path, *, algorithm: SigningAlgorithm = "es256"
) -> None:
    """Write a development chain: `cert_path` gets the signer certificate then the root (PEM),
    `key_path` the signer's private key (PKCS#8 PEM, mode 0600).

    Parent directories are created; existing files are overwritten. The key type follows
    `algorithm`: P-256 (es256), P-384 (es384), RSA-3072 with PSS signatures (ps256), Ed25519.
    Raises ValueError for another algorithm.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    root_key = _new_key(algorithm)
    signer_key = _new_key(algorithm)
    now = datetime.datetime.now(datetime.UTC) - _CLOCK_SKEW

    root_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, DEV_ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, "songserve development root CA"),
        ]
    )
    root_ski = x509.SubjectKeyIdentifier.from_public_key(root_key.public_key())
    root = _sign(
        x509.CertificateBuilder()
        .subject_name(root_name)
        .issuer_name(root_name)
        .public_key(root_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=ROOT_VALIDITY_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            _key_usage(digital_signature=False, key_cert_sign=True, crl_sign=True), critical=True
        )
        .add_extension(root_ski, critical=False),
        root_key,
        algorithm,
    )

    signer = _sign(
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, DEV_ORGANIZATION),
                    x509.NameAttribute(NameOID.COMMON_NAME, "songserve development signer"),
                ]
            )
        )
        .issuer_name(root_name)
        .public_key(signer_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=DEV_VALIDITY_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            _key_usage(digital_signature=True, key_cert_sign=False, crl_sign=False), critical=True
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.EMAIL_PROTECTION, x509.ObjectIdentifier(_DOCUMENT_SIGNING_OID)]
            ),
            critical=False,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(signer_key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(root_ski),
            critical=False,
        ),
        root_key,
        algorithm,
    )

    cert_file, key_file = Path(cert_path), Path(key_path)
    cert_file.parent.mkdir(parents=True, exist_ok=True)
    key_file.parent.mkdir(parents=True, exist_ok=True)
    cert_file.write_bytes(
        signer.public_bytes(serialization.Encoding.PEM)
        + root.public_bytes(serialization.Encoding.PEM)
    )
    key_pem = signer_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Create with 0600 so the key is never readable by others, not even briefly.
    key_file.unlink(missing_ok=True)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key_pem)
    os.chmod(key_file, 0o600)  # the umask cannot widen it, but a stricter one may not narrow it


def ensure_dev_chain(config: C2paConfig) -> bool:
    """Write a development chain at `config.cert_path`/`config.key_path` when neither exists
    and `config.create_dev_chain` is set; return whether one was written.

    Raises FileNotFoundError when exactly one of the two files exists: a lone certificate or
    key is a broken deployment to fix, not one to paper over with a fresh key pair.
    """
    cert, key = Path(config.cert_path), Path(config.key_path)
    if cert.exists() and key.exists():
        return False
    if cert.exists() or key.exists():
        missing = key if cert.exists() else cert
        raise FileNotFoundError(
            f"C2PA {'key' if missing == key else 'certificate chain'} not found at {missing} "
            f"(the other file exists): restore it, or delete both and run `songserve certs dev` "
            "for a development chain"
        )
    if not config.create_dev_chain:
        return False
    write_dev_chain(cert, key, algorithm=config.algorithm)
    return True


def with_signing_chain(config: C2paConfig) -> C2paConfig:
    """A copy of `config` that carries the chain and key themselves (`cert_pem`, `key_pem`):
    values already set (from the environment) are kept, the others are read from `cert_path` /
    `key_path` here.

    Raises ValueError naming the setting (never echoing a key) when a file is missing or
    unreadable, when a value is not PEM text, or when the key is not the one of the chain's
    first certificate or does not fit `algorithm` (c2pa would refuse every signature).
    """
    from pydantic import SecretStr

    pems: dict[str, SecretStr] = {}
    for field, path_field, block, what in (
        ("cert_pem", "cert_path", "CERTIFICATE", "certificate chain"),
        ("key_pem", "key_path", "PRIVATE KEY", "private key"),
    ):
        given: SecretStr | None = getattr(config, field)
        path = Path(getattr(config, path_field))
        source = f"SONGSERVE_POSTPROCESS__C2PA__{field.upper()}" if given else str(path)
        if given is None:
            try:
                given = SecretStr(path.read_text(encoding="ascii"))
            except (OSError, UnicodeDecodeError) as error:
                reason = error.strerror if isinstance(error, OSError) else "not PEM text"
                raise ValueError(
                    f"postprocess.c2pa.{path_field}: cannot read the C2PA {what} at {path} "
                    f"({reason}): run `songserve certs dev` for a development chain (or set "
                    "postprocess.c2pa.create_dev_chain), point cert_path/key_path at your "
                    f"chain, set SONGSERVE_POSTPROCESS__C2PA__{field.upper()}, or set "
                    "postprocess.c2pa.enabled: false"
                ) from None
        first_line = given.get_secret_value().strip().split("\n", 1)[0]
        if not (first_line.startswith("-----BEGIN ") and first_line.endswith(f"{block}-----")):
            raise ValueError(
                f"postprocess.c2pa.{field}: the C2PA {what} from {source} is not PEM text "
                f"(expected a '-----BEGIN …{block}-----' block first)"
            )
        pems[field] = given
    loaded = config.model_validate({**config.model_dump(), **pems})  # normalises the PEMs
    cert_pem, key_pem = loaded.cert_pem, loaded.key_pem
    if cert_pem is None or key_pem is None:  # cannot happen: both were just set
        raise ValueError("postprocess.c2pa: no signing chain")
    _check_key_matches_chain(
        cert_pem.get_secret_value(), key_pem.get_secret_value(), loaded.algorithm
    )
    return loaded


def _check_key_matches_chain(cert_pem: str, key_pem: str, algorithm: str) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    try:
        first = x509.load_pem_x509_certificates(cert_pem.encode())[0]
    except ValueError as error:
        raise ValueError(
            f"postprocess.c2pa: the certificate chain does not parse: {error}"
        ) from None
    try:
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    except (ValueError, TypeError) as error:  # TypeError: the key is password-protected
        raise ValueError(
            f"postprocess.c2pa: the private key does not load (it must be unencrypted PEM): {error}"
        ) from None
    public = serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    if first.public_key().public_bytes(*public) != key.public_key().public_bytes(*public):
        raise ValueError(
            "postprocess.c2pa: the private key does not belong to the chain's first (signer) "
            "certificate: check that cert_path and key_path (or their _PEM variables) are a pair"
        )
    curve = key.curve.name if isinstance(key, ec.EllipticCurvePrivateKey) else None
    fits = {
        "es256": curve == "secp256r1",
        "es384": curve == "secp384r1",
        "ps256": isinstance(key, rsa.RSAPrivateKey),
        "ed25519": isinstance(key, ed25519.Ed25519PrivateKey),
    }
    if not fits.get(algorithm, False):
        raise ValueError(
            f"postprocess.c2pa.algorithm {algorithm} does not fit the private key "
            f"({type(key).__name__.removeprefix('_')}{f', {curve}' if curve else ''}): es256 "
            "needs a P-256 key, es384 P-384, ps256 RSA, ed25519 Ed25519"
        )


def private_signing_files(config: C2paConfig, owner: object) -> C2paConfig:
    """A copy of `config` whose `cert_path` / `key_path` name private copies of its `cert_pem`
    / `key_pem`, for a signer that reads files (`pipeline.provenance.sign_audio`).

    The copies live in a fresh directory of this process's temp dir (mode 0700, files 0600) and
    are removed when `owner` is garbage-collected or the process exits normally. Raises
    ValueError when `config` does not carry both PEMs (see `with_signing_chain`).
    """
    if config.cert_pem is None or config.key_pem is None:
        raise ValueError("postprocess.c2pa: no cert_pem/key_pem to sign with (with_signing_chain)")
    directory = Path(tempfile.mkdtemp(prefix="songserve-c2pa-"))  # mode 0700
    weakref.finalize(owner, shutil.rmtree, directory, ignore_errors=True)
    paths = {"cert_path": directory / "chain.pem", "key_path": directory / "signer.key"}
    for path, pem in zip(paths.values(), (config.cert_pem, config.key_pem), strict=True):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(pem.get_secret_value())
    return config.model_copy(update={name: str(path) for name, path in paths.items()})


def _new_key(algorithm: SigningAlgorithm) -> CertificateIssuerPrivateKeyTypes:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    if algorithm == "es256":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == "es384":
        return ec.generate_private_key(ec.SECP384R1())
    if algorithm == "ps256":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    if algorithm == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unknown signing algorithm {algorithm!r}: use es256, es384, ps256 or ed25519")


def _key_usage(*, digital_signature: bool, key_cert_sign: bool, crl_sign: bool) -> x509.KeyUsage:
    from cryptography import x509

    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _sign(
    builder: x509.CertificateBuilder,
    issuer_key: CertificateIssuerPrivateKeyTypes,
    algorithm: SigningAlgorithm,
) -> x509.Certificate:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    if algorithm == "ed25519":
        return builder.sign(issuer_key, None)
    if algorithm == "es384":
        return builder.sign(issuer_key, hashes.SHA384())
    if algorithm == "ps256":
        return builder.sign(
            issuer_key,
            hashes.SHA256(),
            rsa_padding=padding.PSS(
                mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH
            ),
        )
    return builder.sign(issuer_key, hashes.SHA256())
