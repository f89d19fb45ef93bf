"""`S3ObjectStore` — the object store on any S3-compatible service (AWS, SeaweedFS, MinIO), for a
cluster whose nodes share no disk.

Configured by `storage.storage_url` (`s3://BUCKET[/PREFIX]`) and `storage.s3_endpoint_url` (env
`SONGSERVE_S3_ENDPOINT_URL`; unset: AWS). Credentials and region come from the standard AWS chain
(`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, profiles, instance roles); the region from
`AWS_REGION`, else `AWS_DEFAULT_REGION` or the profile, else us-east-1.

Every write is verified twice: each request carries a Content-MD5 header, which the server checks
before it stores anything (a mismatch is refused with BadDigest), and the ETag the server answers
is compared with our own MD5 (`md5(data)` for one PUT; `md5(md5(part 1) ‖ … ‖ md5(part N))-N` for
a multipart upload). Either failure raises `ChecksumMismatch`. Content-MD5 rather than boto3's
`ChecksumAlgorithm="SHA256"`: SeaweedFS 4.48 validates both (checked against `weed` 4.48), but
Content-MD5 is what every S3-compatible server checks, and it is the same digest the ETag check
needs, so each byte is hashed once. The ETag check assumes objects are not encrypted with SSE-KMS
or SSE-C (AWS then answers an ETag that is not an MD5); SSE-S3, AWS's default, is fine.

boto3 is imported when a store is built, not at import time, so the API and CLI start without it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .objects import ChecksumMismatch, ObjectInfo

MIB = 1 << 20
S3_MIN_PART_BYTES = 5 * MIB
"""S3's smallest part size (all parts but the last); SeaweedFS enforces it too (EntityTooSmall)."""
DELETE_BATCH = 1000
"""The most keys one DeleteObjects request may name."""
MAX_PRESIGN_S = 7 * 24 * 3600
"""SigV4 presigned URLs live at most seven days."""
DEFAULT_REGION = "us-east-1"

_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_CREDENTIAL_CODES = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AccessDenied",
        "403",
        "InvalidToken",
        "ExpiredToken",
    }
)


class ObjectStoreUnavailable(ValueError):
    """The object store cannot be used as configured (endpoint unreachable, credentials refused,
    bucket missing). The message names the setting to fix and never contains a secret.

    A ValueError, like the job store's `check_database`, so start-up checks report a bad setting
    of either store the same way."""


def _md5(data: bytes | memoryview) -> bytes:
    # An integrity check, not security: allowed on FIPS-mode Pythons with this flag.
    return hashlib.md5(data, usedforsecurity=False).digest()


def _error_code(error: Exception) -> str:
    response = getattr(error, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _without_userinfo(url: str) -> str:
    """`url` safe to print: any `user:password@` part is dropped."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


def validate_key(key: str) -> str:
    """`key` itself when it is a usable relative key; KeyError for an empty key, a leading "/",
    or an empty, "." or ".." segment (the filesystem store refuses the same escapes)."""
    if not key or key.startswith("/") or any(part in ("", ".", "..") for part in key.split("/")):
        raise KeyError(f"invalid object key {key!r}")
    return key


class S3ObjectStore:
    """`ObjectStore` on one bucket, with every key stored under an optional prefix.

    All boto3 calls run in a worker thread (`asyncio.to_thread`); one boto3 client, which is
    thread-safe, serves every call of a store. Writes of at most `multipart_threshold_bytes` are
    one PUT; larger ones are a multipart upload of `part_size_bytes` parts (at least 5 MiB, S3's
    minimum), aborted when any step fails.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        multipart_threshold_bytes: int = 8 * MIB,
        part_size_bytes: int = 8 * MIB,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 60.0,
        max_attempts: int = 5,
    ) -> None:
        """`max_attempts` counts every try of one request, the first included."""
        import boto3

        if not bucket:
            raise ValueError("storage.storage_url: an s3:// URL names its bucket: s3://BUCKET")
        if part_size_bytes < S3_MIN_PART_BYTES:
            raise ValueError(
                f"part_size_bytes={part_size_bytes}: S3 parts are at least {S3_MIN_PART_BYTES} "
                "bytes (5 MiB)"
            )
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.multipart_threshold_bytes = multipart_threshold_bytes
        self.part_size_bytes = part_size_bytes
        # Explicit keys (from the config, read where the app was deployed) win; else boto3's
        # chain: the environment, profiles, instance roles.
        session = boto3.session.Session(
            aws_access_key_id=access_key_id, aws_secret_access_key=secret_access_key
        )
        # boto3 reads only AWS_DEFAULT_REGION; most other AWS tools prefer AWS_REGION.
        self.region = (
            region or os.environ.get("AWS_REGION") or session.region_name or DEFAULT_REGION
        )
        self._session = session
        self._connect_timeout_s = connect_timeout_s
        self._config_options: dict[str, Any] = {
            "signature_version": "s3v4",
            # SeaweedFS and MinIO serve buckets as paths; virtual-host names need wildcard DNS.
            "s3": {"addressing_style": "path" if endpoint_url else "auto"},
            # botocore >= 1.36 adds CRC32 checksums to every upload by default, which several
            # S3-compatible servers (older MinIO and Ceph among them) refuse. We send
            # Content-MD5 ourselves, so ask for the extra checksums only where an operation
            # requires one (DeleteObjects). SeaweedFS 4.48 accepts either way (checked).
            "request_checksum_calculation": "when_required",
            "response_checksum_validation": "when_required",
            # More than the default 10: up to ~32 `to_thread` workers share this client.
            "max_pool_connections": 32,
        }
        self.client = self._make_client(connect_timeout_s, read_timeout_s, max_attempts)
        """The boto3 S3 client (thread-safe); tools and tests may hook its botocore events."""

    def _make_client(self, connect_timeout_s: float, read_timeout_s: float, attempts: int) -> Any:
        from botocore.config import Config

        config = Config(
            connect_timeout=connect_timeout_s,
            read_timeout=read_timeout_s,
            # "standard" retries throttling, 5xx and connection errors with jittered backoff;
            # `total_max_attempts` counts the first try.
            retries={"mode": "standard", "total_max_attempts": attempts},
            **self._config_options,
        )
        return self._session.client(
            "s3", endpoint_url=self.endpoint_url, region_name=self.region, config=config
        )

    @classmethod
    def from_url(
        cls, storage_url: str, *, endpoint_url: str | None = None, **options: Any
    ) -> S3ObjectStore:
        """The store for `s3://BUCKET[/PREFIX]`; `endpoint_url` falls back to the environment's
        `SONGSERVE_S3_ENDPOINT_URL`, then to AWS. `options` go to the constructor."""
        parts = urlsplit(storage_url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ValueError(f"storage.storage_url {storage_url!r}: expected s3://BUCKET[/PREFIX]")
        endpoint = endpoint_url or os.environ.get("SONGSERVE_S3_ENDPOINT_URL") or None
        return cls(parts.netloc, parts.path, endpoint_url=endpoint, **options)

    def __repr__(self) -> str:
        endpoint = _without_userinfo(self.endpoint_url) if self.endpoint_url else "AWS"
        return f"S3ObjectStore({self._location()!r} at {endpoint})"

    def _location(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def _object_key(self, key: str) -> str:
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _relative_key(self, object_key: str) -> str:
        return object_key[len(self.prefix) + 1 :] if self.prefix else object_key

    # -- writes ------------------------------------------------------------------------------

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        """Store `data` under `key` (replacing it whole; readers never see a partial object) and
        verify it (ChecksumMismatch; a stored object that fails the check is deleted)."""
        object_key = self._object_key(key)
        await asyncio.to_thread(self._put, key, object_key, data, content_type)

    def _put(self, key: str, object_key: str, data: bytes, content_type: str) -> None:
        from botocore.exceptions import ClientError

        try:
            if len(data) <= self.multipart_threshold_bytes:
                etag, expected = self._put_single(object_key, data, content_type)
            else:
                etag, expected = self._put_multipart(object_key, data, content_type)
        except ClientError as error:
            if _error_code(error) == "BadDigest":
                raise ChecksumMismatch(
                    f"{key}: the object store received bytes whose MD5 differs from what was "
                    "sent (BadDigest); nothing was stored"
                ) from error
            raise
        if etag != expected:
            self._delete_quietly(object_key)
            raise ChecksumMismatch(
                f"{key}: the object store answered ETag {etag}, expected {expected} from the "
                "bytes sent; the stored object was deleted"
            )

    def _put_single(self, object_key: str, data: bytes, content_type: str) -> tuple[str, str]:
        digest = _md5(data)
        response = self.client.put_object(
            Bucket=self.bucket,
            Key=object_key,
            Body=data,
            ContentType=content_type,
            ContentMD5=base64.b64encode(digest).decode(),
        )
        return response["ETag"].strip('"'), digest.hex()

    def _put_multipart(self, object_key: str, data: bytes, content_type: str) -> tuple[str, str]:
        upload_id = self.client.create_multipart_upload(
            Bucket=self.bucket, Key=object_key, ContentType=content_type
        )["UploadId"]
        try:
            parts, digests = [], []
            view = memoryview(data)
            for number, offset in enumerate(range(0, len(data), self.part_size_bytes), start=1):
                part = bytes(view[offset : offset + self.part_size_bytes])
                digest = _md5(part)
                response = self.client.upload_part(
                    Bucket=self.bucket,
                    Key=object_key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=part,
                    ContentMD5=base64.b64encode(digest).decode(),
                )
                part_etag = response["ETag"].strip('"')
                if part_etag != digest.hex():
                    raise ChecksumMismatch(
                        f"{object_key}: part {number} came back with ETag {part_etag}, expected "
                        f"{digest.hex()}"
                    )
                parts.append({"PartNumber": number, "ETag": response["ETag"]})
                digests.append(digest)
            response = self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=object_key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            self._abort_quietly(object_key, upload_id)
            raise
        return response["ETag"].strip('"'), f"{_md5(b''.join(digests)).hex()}-{len(parts)}"

    def _abort_quietly(self, object_key: str, upload_id: str) -> None:
        # Best effort: the original error is what the caller needs; a leftover upload is
        # reclaimed by the bucket's lifecycle rules (or `s3.clean.uploads` on SeaweedFS).
        with contextlib.suppress(Exception):
            self.client.abort_multipart_upload(
                Bucket=self.bucket, Key=object_key, UploadId=upload_id
            )

    def _delete_quietly(self, object_key: str) -> None:
        # Best effort: a corrupt object must not be served, but the ChecksumMismatch is the news.
        with contextlib.suppress(Exception):
            self.client.delete_object(Bucket=self.bucket, Key=object_key)

    # -- reads -------------------------------------------------------------------------------

    async def get(self, key: str) -> bytes:
        """The whole object; KeyError when missing."""
        object_key = self._object_key(key)

        def read() -> bytes:
            from botocore.exceptions import ClientError

            try:
                response = self.client.get_object(Bucket=self.bucket, Key=object_key)
            except ClientError as error:
                if _error_code(error) in _MISSING_CODES:
                    raise KeyError(key) from error
                raise
            with response["Body"] as body:
                return bytes(body.read())

        return await asyncio.to_thread(read)

    async def stat(self, key: str) -> ObjectInfo | None:
        """Size and content type from a HEAD; None when missing."""
        object_key = self._object_key(key)

        def head() -> ObjectInfo | None:
            from botocore.exceptions import ClientError

            try:
                response = self.client.head_object(Bucket=self.bucket, Key=object_key)
            except ClientError as error:
                if _error_code(error) in _MISSING_CODES:
                    return None
                raise
            return ObjectInfo(
                size=int(response["ContentLength"]),
                content_type=response.get("ContentType") or "application/octet-stream",
            )

        return await asyncio.to_thread(head)

    async def iter_range(
        self, key: str, start: int, end: int, chunk_bytes: int = 1 << 20
    ) -> AsyncIterator[bytes]:
        """Bytes `start..end` inclusive (clipped to the object), in chunks of `chunk_bytes` (the
        last may be shorter), from one ranged GET read a chunk at a time in a worker thread, so
        the object is never held whole. KeyError when missing; nothing when `start` is past the
        end."""
        from botocore.exceptions import ClientError

        object_key = self._object_key(key)
        if start < 0 or chunk_bytes <= 0:
            raise ValueError(f"iter_range: start={start}, chunk_bytes={chunk_bytes}")
        if end < start:
            return  # S3 ignores an inverted Range and sends everything; send nothing instead
        try:
            response = await asyncio.to_thread(
                self.client.get_object,
                Bucket=self.bucket,
                Key=object_key,
                Range=f"bytes={start}-{end}",
            )
        except ClientError as error:
            code = _error_code(error)
            if code in _MISSING_CODES:
                raise KeyError(key) from error
            if code == "InvalidRange":  # start is past the end of the object
                return
            raise
        body = response["Body"]
        try:
            while chunk := await asyncio.to_thread(body.read, chunk_bytes):
                yield bytes(chunk)
        finally:
            body.close()  # a consumer that stops early must not leak the connection

    # -- listing and deleting ----------------------------------------------------------------

    def _iter_object_keys(self, object_prefix: str) -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=object_prefix):
            for entry in page.get("Contents", ()):
                yield str(entry["Key"])

    async def list_keys(self, prefix: str) -> list[str]:
        """Every key under the folder-like `prefix` ("songs/x" and "songs/x/" alike), relative to
        the store's own prefix, sorted."""
        folder = self._object_key(prefix.rstrip("/")) + "/"

        def walk() -> list[str]:
            return sorted(self._relative_key(key) for key in self._iter_object_keys(folder))

        return await asyncio.to_thread(walk)

    async def delete_prefix(self, prefix: str) -> None:
        """Delete the object named `prefix` and every object under `prefix/`; nothing else
        (deleting "songs/a" leaves "songs/ab")."""
        exact = self._object_key(prefix.rstrip("/"))
        await asyncio.to_thread(self._delete_under, exact)

    def _delete_under(self, exact: str) -> None:
        batch = [exact]
        for key in self._iter_object_keys(exact + "/"):
            batch.append(key)
            if len(batch) == DELETE_BATCH:
                self._delete_batch(batch)
                batch = []
        if batch:
            self._delete_batch(batch)

    def _delete_batch(self, keys: list[str]) -> None:
        response = self.client.delete_objects(
            Bucket=self.bucket,
            Delete={"Objects": [{"Key": key} for key in keys], "Quiet": True},
        )
        errors = response.get("Errors") or []
        if errors:
            first = errors[0]
            raise RuntimeError(
                f"{self._location()}: {len(errors)} objects were not deleted, e.g. "
                f"{first.get('Key')}: {first.get('Code')} {first.get('Message')}"
            )

    async def presigned_url(self, key: str, expires_s: float) -> str | None:
        """A GET link valid for `expires_s` seconds (1 s to 7 days, SigV4's limits) that any
        HTTP client can fetch without credentials."""
        object_key = self._object_key(key)
        expires = max(1, min(int(expires_s), MAX_PRESIGN_S))
        # Signing is local, but resolving credentials may call an instance-metadata service.
        return await asyncio.to_thread(
            self.client.generate_presigned_url,
            "get_object",
            Params={"Bucket": self.bucket, "Key": object_key},
            ExpiresIn=expires,
        )

    # -- start-up ----------------------------------------------------------------------------

    async def ensure_bucket(self) -> None:
        """Create the bucket when it does not exist; idempotent."""
        await asyncio.to_thread(self._ensure_bucket)

    def _ensure_bucket(self) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as error:
            if _error_code(error) not in ("404", "NoSuchBucket", "NotFound"):
                raise self._unusable(error) from None
        options: dict[str, Any] = {}
        if self.region != DEFAULT_REGION:  # us-east-1 refuses an explicit LocationConstraint
            options["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        try:
            self.client.create_bucket(Bucket=self.bucket, **options)
        except ClientError as error:
            if _error_code(error) != "BucketAlreadyOwnedByYou":  # a concurrent creator won
                raise self._unusable(error) from None

    def check(self) -> None:
        """Fail fast at start-up: ObjectStoreUnavailable, naming the setting to fix, unless the
        endpoint answers, the credentials are accepted and the bucket can be listed.

        Uses a client without retries and with short timeouts, so a wrong endpoint fails in
        seconds rather than after the store's own retry budget."""
        from botocore.exceptions import BotoCoreError, ClientError

        client = self._make_client(min(self._connect_timeout_s, 3.0), 10.0, attempts=1)
        object_prefix = f"{self.prefix}/" if self.prefix else ""
        try:
            client.list_objects_v2(Bucket=self.bucket, Prefix=object_prefix, MaxKeys=1)
        except (BotoCoreError, ClientError) as error:
            raise self._unusable(error) from None

    def _unusable(self, error: Exception) -> ObjectStoreUnavailable:
        """The error for a failed start-up check; built from error codes and class names only,
        never from the request (which may carry credentials)."""
        from botocore.exceptions import (
            ConnectTimeoutError,
            EndpointConnectionError,
            NoCredentialsError,
            PartialCredentialsError,
        )

        endpoint = (
            f"endpoint {_without_userinfo(self.endpoint_url)} (storage.s3_endpoint_url / env "
            "SONGSERVE_S3_ENDPOINT_URL)"
            if self.endpoint_url
            else "AWS S3 (set storage.s3_endpoint_url / env SONGSERVE_S3_ENDPOINT_URL for "
            "another S3-compatible service)"
        )
        where = f"storage.storage_url {self._location()} at {endpoint}"
        code = _error_code(error)
        if isinstance(error, EndpointConnectionError | ConnectTimeoutError):
            return ObjectStoreUnavailable(
                f"{where}: cannot connect ({type(error).__name__}); check the endpoint URL and "
                "that the service is up (`songserve services up` starts a local one)"
            )
        if isinstance(error, NoCredentialsError | PartialCredentialsError):
            return ObjectStoreUnavailable(
                f"{where}: no S3 credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                "(or AWS_PROFILE)"
            )
        if code in _CREDENTIAL_CODES:
            return ObjectStoreUnavailable(
                f"{where}: the credentials were refused ({code}); check AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, and that this key may read and write the bucket"
            )
        if code in ("NoSuchBucket", "404", "NotFound"):
            return ObjectStoreUnavailable(
                f"{where}: bucket {self.bucket!r} does not exist; create it or correct "
                "storage.storage_url"
            )
        detail = code or type(error).__name__
        return ObjectStoreUnavailable(f"{where}: the object store is not usable ({detail})")
