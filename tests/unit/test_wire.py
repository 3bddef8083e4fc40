"""The wire contract as the client reads it: what a Score server answers becomes typed objects,
unknown fields ignored, anything malformed a one-line error that says where."""

from __future__ import annotations

import pytest

from pyscore.wire.codec import WireError, from_wire, to_wire
from pyscore.wire.files import find_index, htsget_format, index_names, is_index
from pyscore.wire.htsget import Ticket, TicketUrl, ticket_from_json, ticket_to_json
from pyscore.wire.score import ObjectSpecification, Part

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
    with pytest.raises(WireError) as error:
        from_wire(ObjectSpecification, {**SPEC, **change}, "object x")
    message = str(error.value)
    assert message.startswith("object x: the server's answer is not a valid ObjectSpecification")
    assert says in message and "\n" not in message


def test_a_non_object_answer_is_refused():
    with pytest.raises(WireError, match="not a valid ObjectSpecification"):
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


@pytest.mark.parametrize(
    ("data", "index"),
    [
        ("A.bam", "a.bam.bai"),
        ("a.bam", "A.BAI"),  # samtools' other convention, any case (as the original)
        ("x.cram", "x.cram.crai"),
        ("v.vcf.gz", "v.vcf.gz.tbi"),
        ("v.vcf.gz", "v.vcf.gz.csi"),
        ("v.vcf", "v.vcf.idx"),  # the original client's Tribble index
    ],
)
def test_one_rule_pairs_a_data_file_with_its_index(data: str, index: str) -> None:
    assert is_index(index) and not is_index(data)
    assert find_index(data, {index.lower(): "found", "other.bam.bai": "no"}) == "found"


def test_the_full_name_wins_over_the_stem() -> None:
    names = index_names("a.bam")
    assert names.index("a.bam.bai") < names.index("a.bai")
    assert find_index("a.bam", {"a.bai": "stem", "a.bam.bai": "full"}) == "full"
    assert find_index("a.bam", {"b.bam.bai": "other"}) is None


def test_htsget_formats_by_name() -> None:
    assert [htsget_format(n) for n in ("a.BAM", "a.cram", "a.vcf.gz", "a.bcf", "a.txt")] == [
        "BAM",
        "CRAM",
        "VCF",
        "BCF",
        None,
    ]


def test_an_htsget_ticket_round_trips_with_its_class_and_range():
    ticket = Ticket(
        "BAM",
        [
            TicketUrl("data:application/octet-stream;base64,AA==", klass="header"),
            TicketUrl("https://s/x?sig=1", {"Range": "bytes=100-199"}, "body"),
        ],
    )
    data = ticket_to_json(ticket)
    assert data["htsget"]["urls"][0] == {
        "url": "data:application/octet-stream;base64,AA==",
        "class": "header",
    }
    back = ticket_from_json(data, "ticket")
    assert back == ticket
    assert [u.length() for u in back.urls] == [None, 100]


@pytest.mark.parametrize("body", [{}, {"htsget": {"format": "BAM"}}, [], {"htsget": {"urls": [1]}}])
def test_a_malformed_ticket_is_a_one_line_wire_error(body):
    with pytest.raises(WireError, match="ticket"):
        ticket_from_json(body, "ticket for x")
