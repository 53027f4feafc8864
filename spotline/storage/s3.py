"""Object store on S3 or any S3-compatible server (endpoint URL setting)."""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path
from typing import Iterator

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

from spotline.settings import StoreSettings
from spotline.storage.base import ObjectInfo, ObjectNotFound, VersionConflict

# Files above 64 MiB go up and down in 64 MiB parts, four at a time (checkpoints, model files);
# a failed part is retried alone instead of the whole file.
TRANSFER = TransferConfig(multipart_threshold=64 * 2**20, multipart_chunksize=64 * 2**20, max_concurrency=4)
_MISSING = ("404", "NoSuchKey", "NotFound")


def s3_client(settings: StoreSettings):
    """boto3 S3 client with botocore's adaptive retry mode (throttling and 5xx back off client-side)."""
    config = Config(
        retries={"mode": "adaptive", "max_attempts": settings.max_attempts},
        # Custom endpoints (SeaweedFS, MinIO) rarely have wildcard DNS for virtual-host buckets.
        s3={"addressing_style": "path" if settings.endpoint_url else "auto"},
        connect_timeout=10,
        read_timeout=60,
        max_pool_connections=32,
    )
    kwargs = {}
    if settings.access_key_id and settings.secret_access_key:
        kwargs = {
            "aws_access_key_id": settings.access_key_id.get_secret_value(),
            "aws_secret_access_key": settings.secret_access_key.get_secret_value(),
        }
    return boto3.client("s3", endpoint_url=settings.endpoint_url, region_name=settings.region, config=config, **kwargs)


# User metadata (x-amz-meta-sha256) every put records, so a later upload can tell identical bytes by a HEAD.
SHA256_META = "sha256"


class S3ObjectStore:
    def __init__(self, settings: StoreSettings, bucket: str | None = None, client=None):
        self.bucket = bucket or settings.bucket
        self.client = client or s3_client(settings)

    def ensure_bucket(self) -> None:
        """Create the bucket when missing (local S3-compatible servers and first-time setup)."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            self.client.create_bucket(Bucket=self.bucket)

    def _info(self, key: str, size: int, etag: str) -> ObjectInfo:
        return ObjectInfo(key=key, uri=self.uri(key), size=size, version=etag.strip('"'))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                yield self._info(obj["Key"], obj["Size"], obj["ETag"])

    def _head_object(self, key: str) -> dict | None:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING:
                return None
            raise

    def head(self, key: str) -> ObjectInfo | None:
        resp = self._head_object(key)
        return None if resp is None else self._info(key, resp["ContentLength"], resp["ETag"])

    def get(self, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING:
                raise ObjectNotFound(key) from None
            raise

    def holds(self, key: str, data: bytes) -> bool:
        # One HEAD, no download. Spotline's puts record the SHA-256 as user metadata. An object
        # written by another tool may still be proven identical by a single-part ETag, which is
        # the MD5 of the bytes unless SSE-KMS is on (then it never matches, and the object is
        # simply written again: a wasted PUT, never a skipped change).
        resp = self._head_object(key)
        if resp is None or resp["ContentLength"] != len(data):
            return False
        recorded = (resp.get("Metadata") or {}).get(SHA256_META)
        if recorded:
            return recorded == hashlib.sha256(data).hexdigest()
        etag = resp["ETag"].strip('"')
        return "-" not in etag and etag == hashlib.md5(data, usedforsecurity=False).hexdigest()

    def put(self, key: str, data: bytes, content_type: str | None = None) -> None:
        extra = {"ContentType": content_type} if content_type else {}
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data,
                               Metadata={SHA256_META: hashlib.sha256(data).hexdigest()}, **extra)

    def put_if(self, key: str, data: bytes, expected_version: str | None, content_type: str | None = None) -> str:
        # S3 conditional writes: If-None-Match: * creates only, If-Match: <etag> replaces only that version.
        extra = {"ContentType": content_type} if content_type else {}
        if expected_version is None:
            extra["IfNoneMatch"] = "*"
        else:
            extra["IfMatch"] = f'"{expected_version}"'
        try:
            reply = self.client.put_object(Bucket=self.bucket, Key=key, Body=data, **extra)
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            code = exc.response.get("Error", {}).get("Code")
            # 412: the condition failed; 409: another conditional write to the key is in flight;
            # 404 on If-Match: the object it expected is gone.
            if status in (409, 412) or code in ("PreconditionFailed", "ConditionalRequestConflict") or (
                expected_version is not None and code in _MISSING
            ):
                raise VersionConflict(key, expected_version) from None
            raise
        return reply["ETag"].strip('"')

    def put_file(self, key: str, path: Path, content_type: str | None = None) -> None:
        extra = {"ContentType": content_type} if content_type else None
        self.client.upload_file(str(path), self.bucket, key, ExtraArgs=extra, Config=TRANSFER)

    def get_file(self, key: str, path: Path) -> None:
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
        try:
            self.client.download_file(self.bucket, key, str(tmp), Config=TRANSFER)
            os.replace(tmp, path)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING:
                raise ObjectNotFound(key) from None
            raise
        finally:
            tmp.unlink(missing_ok=True)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=key)

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"
