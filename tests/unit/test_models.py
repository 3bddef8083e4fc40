"""The wire contract as the client reads it: what a Score server answers becomes typed objects,
unknown fields ignored, anything malformed a one-line error that says where."""

from __future__ import annotations

import pytest

from pyscore.errors import ScoreError
from pyscore.models import ObjectSpecification, Part, from_wire, to_wire

SPEC = {
    "objectKey": "data/x",
    "objectId": "x",
    "uploadId": "u",
    "objectSize": 10,
    "objectMd5": "0" * 32,
    "relativePath": "ignored",  # Score sends fields we don't use
    "parts": [
        {
            "partNumber": 1,
            "partSize": 10,
            "offset": 0,
            "url": "http://s/x",
            "md5": None,
            "sourceMd5": None,
            "extra": True,
        }
    ],
}


def test_a_score_answer_becomes_typed_objects_and_unknown_fields_are_ignored():
    spec = from_wire(ObjectSpecification, SPEC, "object x")
    assert spec.parts == [Part(partNumber=1, partSize=10, offset=0, url="http://s/x")]
    assert spec.objectSize == 10 and spec.objectMd5 == "0" * 32


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"objectId": None}, "objectId"),
        ({"objectSize": "10"}, "objectSize"),
        ({"parts": [{"partNumber": 1, "offset": 0}]}, "partSize"),
        ({"parts": [{"partNumber": "one", "partSize": 1, "offset": 0}]}, "$.parts[0].partNumber"),
    ],
)
def test_a_malformed_answer_is_one_line_naming_the_field(change, says):
    with pytest.raises(ScoreError) as error:
        from_wire(ObjectSpecification, {**SPEC, **change}, "object x")
    message = str(error.value)
    assert message.startswith("object x: the server's answer is not a valid ObjectSpecification")
    assert says in message and "\n" not in message


def test_a_non_object_answer_is_refused():
    with pytest.raises(ScoreError, match="not a valid ObjectSpecification"):
        from_wire(ObjectSpecification, ["not", "an", "object"], "object x")


def test_to_wire_leaves_out_none_at_every_depth():
    spec = from_wire(ObjectSpecification, SPEC, "object x")
    assert to_wire(spec) == {
        "objectKey": "data/x",
        "objectId": "x",
        "uploadId": "u",
        "objectSize": 10,
        "objectMd5": "0" * 32,
        "parts": [{"partNumber": 1, "partSize": 10, "offset": 0, "url": "http://s/x"}],
    }
