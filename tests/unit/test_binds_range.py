"""Which signed URLs the download engine may split into smaller ranges or resume inside:
only those known not to bind the part's Range. The S3 URLs are made by boto3, offline."""

from __future__ import annotations

import boto3
import pytest
from botocore.config import Config

from pyscore.client.httpio import binds_range


def presigned(**params) -> str:
    s3 = boto3.client(
        "s3",
        endpoint_url="http://127.0.0.1:9",
        region_name="us-east-1",
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="secret",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    return s3.generate_presigned_url(
        "get_object", Params={"Bucket": "b", "Key": "data/x", **params}, ExpiresIn=60
    )


def test_sigv4_with_a_signed_range_binds():
    url = presigned(Range="bytes=0-99")
    assert "X-Amz-SignedHeaders=host%3Brange" in url
    assert binds_range(url)


def test_sigv4_signing_only_the_host_does_not_bind():
    url = presigned()
    assert "X-Amz-SignedHeaders=host&" in url
    assert not binds_range(url)


@pytest.mark.parametrize(
    ("url", "binds"),
    [
        # pyscore's local store: any range inside the signed one
        ("http://h/store/objects/x?Expires=9&range=0-9&kid=k1&sig=ab", False),
        ("http://h/store/objects/x?exp=9&range=0-9&sig=ab", False),  # before key rotation
        # SigV2 cannot sign a Range header
        ("https://h/b/data/x?AWSAccessKeyId=A&Expires=9&Signature=s", False),
        # shapes we cannot tell about: fetch exactly the part's range
        ("https://acct.blob.core.windows.net/c/x?se=2026-01-01&sig=s", True),
        ("https://h/some/other/x?token=abc", True),
        ("http://h/elsewhere/x?exp=9&sig=ab", True),
    ],
)
def test_other_shapes(url, binds):
    assert binds_range(url) is binds
