"""S3-compatible object store (AWS S3, Ceph RGW, MinIO, SeaweedFS) through presigned URLs:
object bytes go between the client and the store, never through the server.

Bucket layout follows the original score-server: `data/<objectId>` holds the object and
`data/<objectId>.meta` its ObjectSpecification with per-part MD5s; an upload in progress keeps
its specification under `upload/<objectId>_<uploadId>/.meta`. As Score's, the `.meta` files
may live in a state bucket apart, and both buckets may be partitioned (`<bucket>.<n>`), so a
Score bucket is served where it is (`score-server import score`). The database stays the source of
truth; the `.meta` files let tools written for the original read the bucket.

By default presigned GETs cover the whole object (no signed Range header): one URL serves
every part and clients may split parts into smaller ranged requests; what a URL may read is
still one object, for a limited time. With `s3_sign_part_range` each download part's URL signs
its Range header (SigV4 `X-Amz-SignedHeaders=host;range`), as the original score-server's
do: the store then answers exactly that range and refuses any other, which is how to check
that a client copes with the original's URLs.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional, TypeVar

import boto3
from boto3.exceptions import PythonDeprecationWarning
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from pyscore.server.errors import ApiError, Unavailable
from pyscore.server.settings import Settings
from pyscore.server.store.base import ObjectStat, content_disposition

# On Python 3.9 boto3 warns on every client; the line would break one-line CLI errors.
warnings.filterwarnings("ignore", category=PythonDeprecationWarning)

MAX_PRESIGN = 7 * 24 * 3600  # SigV4's limit


HEX = re.compile(r"[0-9a-fA-F]+")
# A store that is down or frozen must cost a request seconds, not botocore's default of 60 s
# per read times 5 retries: then it is answered 503 (`Unavailable`) and the client retries.
CONNECT_TIMEOUT, READ_TIMEOUT, ATTEMPTS = 5, 10, 2
BUSY_CODES = {"SlowDown", "ServiceUnavailable", "RequestTimeout", "InternalError"}
MISSING_CODES = {"404", "NoSuchKey", "NotFound", "NoSuchUpload"}


def outage(exc: Exception) -> bool:
    """Whether a failed call says the store is away or overloaded (no connection, a reset,
    a timeout, a 5xx or SlowDown) rather than refusing the call itself."""
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return status >= 500 or exc.response.get("Error", {}).get("Code") in BUSY_CODES
    return isinstance(exc, (HTTPClientError, BotoConnectionError))


def missing(exc: ClientError) -> bool:
    return str(exc.response.get("Error", {}).get("Code")) in MISSING_CODES


F = TypeVar("F", bound=Callable[..., Any])


def calls_store(method: F) -> F:
    """A method that talks to the store raises `Unavailable` (503 + Retry-After) when the
    store is away, its other failures as they are."""

    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except (ClientError, HTTPClientError, BotoConnectionError) as exc:
            if outage(exc):
                raise Unavailable(
                    "object_store",
                    "The object store is unavailable; retry after Retry-After seconds",
                ) from exc
            raise

    return call  # type: ignore[return-value]


class S3Store:
    """Objects in `bucket` (or its partitions), their `.meta` and upload state in the state
    bucket (or its partitions), as Score's S3BucketNamingService lays them out."""

    kind = "s3"

    def __init__(
        self,
        bucket: str,
        prefix: str,
        client,
        sign_part_range: bool = False,
        state_bucket: str = "",
        partitions: int = 0,
        key_length: int = 0,
    ) -> None:
        self.bucket, self.prefix, self.client = bucket, prefix.strip("/"), client
        self.signs_ranges = sign_part_range  # then every part needs a URL of its own
        self.state_bucket = state_bucket or bucket
        self.partitions, self.key_length = max(partitions, 0), key_length
        # Partitioned: the bucket an object was left in outside its partition (Score's
        # "relocated", from before partitioning), if any; the platform asks its database
        self.locate: Callable[[str], Optional[str]] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Store:
        rest = settings.store[len("s3://") :]
        bucket, _, prefix = rest.partition("/")
        client = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint or None,
            region_name=settings.s3_region,
            aws_access_key_id=settings.s3_access_key or None,
            aws_secret_access_key=settings.s3_secret_key or None,
            config=Config(
                signature_version="s3v4",
                connect_timeout=CONNECT_TIMEOUT,
                read_timeout=READ_TIMEOUT,
                retries={"mode": "standard", "total_max_attempts": ATTEMPTS},
                s3={"addressing_style": settings.s3_addressing_style},
            ),
        )
        return cls(
            bucket,
            prefix,
            client,
            settings.s3_sign_part_range,
            settings.s3_state_bucket,
            settings.s3_partitions,
            settings.s3_partition_key_length,
        )

    def _key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def data_key(self, object_id: str) -> str:
        return self._key("data", object_id)

    def meta_key(self, object_id: str) -> str:
        return self.data_key(object_id) + ".meta"

    # -- Score's bucket naming -----------------------------------------------------------
    def partition(self, base: str, object_id: str) -> str:
        """`<base>.<n>`, n = the id's first key-length hex characters mod the partitions;
        the base itself unpartitioned, and for names that are no object id (the sentinel
        lives in the base bucket, as Score's does)."""
        piece = object_id[: self.key_length]
        if self.partitions <= 0 or self.key_length <= 0 or not HEX.fullmatch(piece):
            return base
        return f"{base}.{int(piece, 16) % self.partitions}"

    def _moved(self, object_id: str) -> Optional[str]:
        return self.locate(object_id) if self.partitions and self.locate else None

    def object_bucket(self, object_id: str) -> str:
        return self._moved(object_id) or self.partition(self.bucket, object_id)

    def state_bucket_of(self, object_id: str) -> str:
        """Where an object's `.meta` and upload state are: its partition of the state
        bucket, or the base state bucket for an object Score left in the base bucket."""
        if self._moved(object_id):
            return self.state_bucket
        return self.partition(self.state_bucket, object_id)

    def buckets(self) -> list[str]:
        """Every bucket of the layout: object and state buckets, with their partitions."""
        names = [self.bucket, self.state_bucket]
        for n in range(self.partitions):
            names += [f"{self.bucket}.{n}", f"{self.state_bucket}.{n}"]
        return list(dict.fromkeys(names))

    @calls_store
    def prepare(self) -> None:
        for name in self.buckets():
            try:
                self.client.head_bucket(Bucket=name)
            except ClientError:
                self.client.create_bucket(Bucket=name)

    @calls_store
    def put_cors(self, rule: dict) -> dict:
        """Put a bucket CORS configuration (browsers reading presigned URLs) and return what
        the store then holds."""
        self.client.put_bucket_cors(Bucket=self.bucket, CORSConfiguration=rule)
        held = self.client.get_bucket_cors(Bucket=self.bucket)
        return {"CORSRules": held.get("CORSRules", [])}

    # -- objects ---------------------------------------------------------------------------
    def url_for_get(
        self,
        object_id: str,
        *,
        base_url: str,
        expires_in: int,
        offset: int | None = None,
        length: int | None = None,
        filename: str | None = None,
    ) -> str:
        params = {"Bucket": self.object_bucket(object_id), "Key": self.data_key(object_id)}
        if self.signs_ranges and offset is not None and length is not None:
            params["Range"] = f"bytes={offset}-{offset + length - 1}"
        if filename:
            params["ResponseContentDisposition"] = content_disposition(filename)
        return self.client.generate_presigned_url(
            "get_object", Params=params, ExpiresIn=min(expires_in, MAX_PRESIGN)
        )

    @calls_store
    def stat(self, object_id: str) -> ObjectStat | None:
        try:
            head = self.client.head_object(
                Bucket=self.object_bucket(object_id), Key=self.data_key(object_id)
            )
        except ClientError as exc:
            if outage(exc):
                raise
            return None  # missing, or not ours to read: either way no object here
        return ObjectStat(head["ContentLength"], head["LastModified"])

    @calls_store
    def read_range(self, object_id: str, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        try:
            body = self.client.get_object(
                Bucket=self.object_bucket(object_id),
                Key=self.data_key(object_id),
                Range=f"bytes={offset}-{offset + length - 1}",
            )["Body"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "InvalidRange":
                return b""
            raise
        return body.read()

    @calls_store
    def put_bytes(self, object_id: str, data: bytes) -> None:
        self.client.put_object(
            Bucket=self.object_bucket(object_id), Key=self.data_key(object_id), Body=data
        )

    @calls_store
    def put_file(self, object_id: str, path: Path) -> None:
        self.client.upload_file(str(path), self.object_bucket(object_id), self.data_key(object_id))

    @calls_store
    def delete(self, object_id: str) -> None:
        self.client.delete_object(
            Bucket=self.object_bucket(object_id), Key=self.data_key(object_id)
        )
        self.client.delete_object(
            Bucket=self.state_bucket_of(object_id), Key=self.meta_key(object_id)
        )

    @calls_store
    def write_meta(self, object_id: str, spec: dict) -> None:
        """The original's `data/<id>.meta`: ObjectSpecification with part MD5s."""
        self.client.put_object(
            Bucket=self.state_bucket_of(object_id),
            Key=self.meta_key(object_id),
            Body=json.dumps(spec).encode(),
            ContentType="application/json",
        )

    # -- multipart uploads -----------------------------------------------------------------
    def _upload_meta(self, object_id: str, upload_id: str) -> str:
        return self._key("upload", f"{object_id}_{upload_id}", ".meta")

    @calls_store
    def initiate(self, object_id: str, size: int) -> str:
        upload = self.client.create_multipart_upload(
            Bucket=self.object_bucket(object_id), Key=self.data_key(object_id)
        )
        upload_id = upload["UploadId"]
        self.client.put_object(
            Bucket=self.state_bucket_of(object_id),
            Key=self._upload_meta(object_id, upload_id),
            Body=json.dumps(
                {"objectId": object_id, "uploadId": upload_id, "objectSize": size}
            ).encode(),
        )
        return upload_id

    def url_for_part(
        self,
        object_id: str,
        upload_id: str,
        part_number: int,
        offset: int,
        size: int,
        *,
        base_url: str,
        expires_in: int,
    ) -> str:
        return self.client.generate_presigned_url(
            "upload_part",
            Params={
                "Bucket": self.object_bucket(object_id),
                "Key": self.data_key(object_id),
                "UploadId": upload_id,
                "PartNumber": part_number,
            },
            ExpiresIn=min(expires_in, MAX_PRESIGN),
        )

    @calls_store
    def list_parts(self, object_id: str, upload_id: str) -> dict[int, str] | None:
        parts: dict[int, str] = {}
        marker = 0
        while True:
            try:
                page = self.client.list_parts(
                    Bucket=self.object_bucket(object_id),
                    Key=self.data_key(object_id),
                    UploadId=upload_id,
                    PartNumberMarker=marker,
                )
            except ClientError as exc:
                if missing(exc):  # completed or aborted
                    return None
                raise
            for p in page.get("Parts", []):
                parts[p["PartNumber"]] = p["ETag"].strip('"')
            if not page.get("IsTruncated"):
                return parts
            marker = page["NextPartNumberMarker"]

    @calls_store
    def complete(self, object_id: str, upload_id: str, etags: dict[int, str]) -> None:
        strays = self._begun_before(object_id, upload_id)
        try:
            self.client.complete_multipart_upload(
                Bucket=self.object_bucket(object_id),
                Key=self.data_key(object_id),
                UploadId=upload_id,
                MultipartUpload={
                    "Parts": [{"PartNumber": n, "ETag": f'"{etags[n]}"'} for n in sorted(etags)]
                },
            )
        except ClientError as exc:
            # the store's own trouble (5xx, SlowDown) is worth retrying: 503 (calls_store); a
            # refusal is final (400: the Java client fails at once), unless it is that the
            # upload is gone because it made this very object (completed before, its answer
            # or the platform's record of it lost): then it is answered as the first time
            if outage(exc):
                raise
            if not (missing(exc) and self._made_of(object_id, etags)):
                raise ApiError(
                    400,
                    "upload.complete.failed",
                    f"The object store refused to complete upload {upload_id}: "
                    f"{exc.response.get('Error', {}).get('Message', exc)}",
                ) from None
        self._drop_upload_meta(object_id, upload_id)
        for stray in strays:  # best effort: the upload itself is complete
            with contextlib.suppress(ApiError, ClientError, BotoCoreError):
                self.abort(object_id, stray)

    def _made_of(self, object_id: str, etags: dict[int, str]) -> bool:
        """Whether the object is the completion of these parts: its ETag is S3's multipart
        ETag of them (the MD5 of the parts' MD5s, then '-' and how many)."""
        try:
            head = self.client.head_object(
                Bucket=self.object_bucket(object_id), Key=self.data_key(object_id)
            )
            digests = b"".join(bytes.fromhex(etags[n].strip('"')) for n in sorted(etags))
        except ClientError as exc:
            if outage(exc):
                raise
            return False
        except ValueError:  # an ETag that is no hex MD5 is no part of this object
            return False
        combined = f"{hashlib.md5(digests).hexdigest()}-{len(etags)}"
        return str(head.get("ETag", "")).strip('"') == combined

    def _begun_before(self, object_id: str, upload_id: str) -> list[str]:
        """Multipart uploads of the same object begun before this one: no one's (a create
        the store carried out after the server had given up waiting for its answer, or one
        whose record was lost with a dropped transaction), aborted once this one completes
        so they hold no space. One begun after it is left alone: it may be a new upload's."""
        key = self.data_key(object_id)
        found = self.client.list_multipart_uploads(
            Bucket=self.object_bucket(object_id), Prefix=key
        ).get("Uploads", [])
        ours = [u["Initiated"] for u in found if u["UploadId"] == upload_id]
        return [
            u["UploadId"]
            for u in found
            if u["Key"] == key and u["UploadId"] != upload_id and ours and u["Initiated"] <= ours[0]
        ]

    @calls_store
    def abort(self, object_id: str, upload_id: str) -> None:
        try:
            self.client.abort_multipart_upload(
                Bucket=self.object_bucket(object_id),
                Key=self.data_key(object_id),
                UploadId=upload_id,
            )
        except ClientError as exc:
            if not missing(exc):  # already gone is what was asked
                raise
        self._drop_upload_meta(object_id, upload_id)

    def _drop_upload_meta(self, object_id: str, upload_id: str) -> None:
        self.client.delete_object(
            Bucket=self.state_bucket_of(object_id), Key=self._upload_meta(object_id, upload_id)
        )
