"""S3's CompleteMultipartUpload asked again once done: AWS S3 and MinIO may answer
NoSuchUpload (Ceph RGW answers it again as the first time). The store then checks the
object is the completion of these parts (its ETag is their multipart ETag) and answers as
the first time; any other object is still a refusal. A fake boto3 client, no store."""

from __future__ import annotations

import hashlib

import pytest
from botocore.exceptions import ClientError

from pyscore.server.errors import ApiError
from pyscore.server.store.s3 import S3Store

PARTS = {1: hashlib.md5(b"one").hexdigest(), 2: hashlib.md5(b"two").hexdigest()}
MULTIPART = hashlib.md5(b"".join(bytes.fromhex(PARTS[n]) for n in (1, 2))).hexdigest() + "-2"


def error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "op",
    )


class CompletedBefore:
    """A bucket whose upload was completed before: the object is there with `etag`."""

    def __init__(self, etag: str | None) -> None:
        self.etag, self.deleted = etag, []

    def list_multipart_uploads(self, **_):
        return {"Uploads": []}

    def complete_multipart_upload(self, **_):
        raise error("NoSuchUpload", 404)

    def head_object(self, **_):
        if self.etag is None:
            raise error("404", 404)
        return {"ETag": f'"{self.etag}"', "ContentLength": 6}

    def delete_object(self, Key, **_):
        self.deleted.append(Key)


def test_asked_again_for_the_parts_it_made_it_answers_as_the_first_time():
    client = CompletedBefore(MULTIPART)
    S3Store("b", "", client).complete("obj", "up", {n: f'"{e}"' for n, e in PARTS.items()})
    assert client.deleted == ["upload/obj_up/.meta"]  # the upload's state goes as the first time


@pytest.mark.parametrize(
    ("etag", "parts"),
    [
        (hashlib.md5(b"other").hexdigest() + "-2", PARTS),  # another object
        (MULTIPART, {1: PARTS[1]}),  # the same object, not these parts
        (MULTIPART, {1: "not hex", 2: PARTS[2]}),
        (None, PARTS),  # no object at all: the upload was aborted
    ],
)
def test_any_other_object_is_still_a_refusal(etag, parts):
    with pytest.raises(ApiError) as caught:
        S3Store("b", "", CompletedBefore(etag)).complete("obj", "up", parts)
    assert (caught.value.status, caught.value.error_id) == (400, "upload.complete.failed")
