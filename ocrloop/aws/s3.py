"""``BlobStore`` on an S3 bucket (versioned, SSE-KMS).

Immutable writes (``if_absent=True``) use S3 conditional writes: ``PutObject`` with
``If-None-Match: *`` fails with HTTP 412 ``PreconditionFailed`` when the key exists
(https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes.html), which is atomic,
unlike a HEAD-then-PUT.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from ..ports import ObjectExists


class S3BlobStore:
    """A bucket, optionally under a key prefix.

    Args:
        client: a boto3 S3 client.
        bucket: bucket name.
        kms_key_arn: when set, every put requests SSE-KMS with this key (the bucket default does the
            same; stating it makes a mis-configured bucket fail loudly instead of silently using
            SSE-S3).
    """

    def __init__(self, client: Any, bucket: str, kms_key_arn: str = "") -> None:
        self._s3 = client
        self.bucket = bucket
        self._kms = kms_key_arn

    def put(self, key: str, data: bytes, *, if_absent: bool = False) -> str:
        """Store ``data``; returns the version id (``"null"`` on an unversioned bucket).

        Raises:
            ObjectExists: ``if_absent`` and ``key`` already holds an object (HTTP 412).
            botocore.exceptions.ClientError: any other S3 error (access denied, KMS …).
        """
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "Body": data}
        if self._kms:
            kwargs.update(ServerSideEncryption="aws:kms", SSEKMSKeyId=self._kms, BucketKeyEnabled=True)
        if if_absent:
            kwargs["IfNoneMatch"] = "*"
        try:
            response = self._s3.put_object(**kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if if_absent and (code == "PreconditionFailed" or status == 412):
                raise ObjectExists(self.uri(key)) from exc
            raise
        return response.get("VersionId") or "null"

    def get(self, key: str) -> bytes:
        """Latest version's bytes. Raises ``KeyError`` when the key does not exist."""
        try:
            return self._s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise KeyError(self.uri(key)) from exc
            raise

    def exists(self, key: str) -> bool:
        try:
            self._s3.head_object(Bucket=self.bucket, Key=key)
            return True
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return False
            raise

    def delete(self, key: str) -> None:
        """Delete the key (on a versioned bucket this adds a delete marker; earlier versions stay
        until the lifecycle rule expires them). Deleting a missing key is not an error."""
        self._s3.delete_object(Bucket=self.bucket, Key=key)

    def list(self, prefix: str) -> list[str]:
        """Keys under ``prefix``, sorted (ListObjectsV2, paginated; 1,000 keys per page)."""
        keys: list[str] = []
        paginator = self._s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            keys.extend(obj["Key"] for obj in page.get("Contents", []))
        return sorted(keys)

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` → ``("bucket", "a/b")``. Raises ``ValueError`` for other schemes."""
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[5:].partition("/")
    if not bucket:
        raise ValueError(f"no bucket in {uri!r}")
    return bucket, key
