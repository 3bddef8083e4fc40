"""pyscore's batch lookups (an extension the original services lack): advertised on every
answer, each id answered as its own single call would be, capped in ids and bytes.
(Who may read what, per object, is in test_access_matrix.py.)"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from pyscore.client.api import Api
from pyscore.client.config import DEFAULTS, ClientSettings
from pyscore.client.lookup import Lookups
from pyscore.wire.batch import ANSWER_PARTS
from tests.api import bearer, enlarge, song_error, submit, upload
from tests.conftest import Server, init_server
from tests.publish import MiB, song_payload

UNKNOWN = "00000000-0000-0000-0000-00000000beef"


@pytest.fixture(scope="module")
def http(demo_server):
    with httpx.Client(
        base_url=demo_server.url, headers=bearer(demo_server.admin_token), timeout=60
    ) as client:
        yield client


@pytest.fixture(scope="module")
def ids(http) -> list[str]:
    listed = http.get("/entities", params={"size": 2000}).json()["content"]
    assert len(listed) >= 4
    return [e["id"] for e in listed]


def test_every_answer_offers_batches(http, ids):
    for r in (
        http.get(f"/download/{ids[0]}"),
        http.get(f"/entities/{ids[0]}"),
        http.get(f"/entities/{UNKNOWN}"),
        http.get("/isAlive"),
    ):
        assert r.headers["pyscore-batch"] == "max=1000", r.headers


def test_entity_batch_answers_each_id_as_its_own_lookup(http, ids):
    wanted = [ids[0], UNKNOWN, ids[1], ids[-1]]
    r = http.post("/entities/batch", json={"ids": wanted})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["id"] for x in results] == wanted
    for x in results:
        single = http.get(f"/entities/{x['id']}")
        assert x["status"] == single.status_code
        if x["status"] == 200:
            assert x["entity"] == single.json()
        else:
            assert (x["errorId"], x["message"]) == (
                "legacy.entity.not.found",
                single.json()["message"],
            )


def test_an_id_asked_again_in_an_entity_batch_is_answered_once(http, ids):
    """Issue 20 (as /download/batch): one id named 1,000 times was answered 1,000 times;
    its repeats are refused (400 batch.repeated), each answer costing a line."""
    r = http.post("/entities/batch", json={"ids": [ids[0], UNKNOWN, ids[0], UNKNOWN]})
    assert r.status_code == 200, r.text
    first, unknown, *again = r.json()["results"]
    assert first["status"] == 200 and unknown["status"] == 404
    assert [(x["id"], x["status"], x["errorId"]) for x in again] == [
        (ids[0], 400, "batch.repeated"),
        (UNKNOWN, 400, "batch.repeated"),
    ]
    assert all(ids[0] in again[0]["message"] and "entity" not in x for x in again)
    many = http.post("/entities/batch", json={"ids": [ids[0]] * 1000}).json()["results"]
    assert [x["status"] for x in many] == [200] + [400] * 999
    assert sum("entity" in x for x in many) == 1


def test_spec_batch_answers_ranges_as_the_single_call(http, ids):
    object_id = ids[0]
    size = http.get(f"/download/{object_id}").json()["objectSize"]
    wanted = [
        {"objectId": object_id},
        {"objectId": object_id, "offset": 1, "length": size - 2},
        {"objectId": object_id, "offset": size, "length": 5},
    ]
    r = http.post("/download/batch", json={"objects": wanted})
    assert r.status_code == 200, r.text
    whole, inner, outside = r.json()["results"]

    def layout(spec: dict) -> list:
        return [(p["partNumber"], p["offset"], p["partSize"], p.get("sourceMd5")) for p in spec]

    for got, params in ((whole, {}), (inner, {"offset": 1, "length": size - 2})):
        single = http.get(f"/download/{object_id}", params=params).json()
        assert got["status"] == 200
        assert layout(got["spec"]["parts"]) == layout(single["parts"])
        assert {k: v for k, v in got["spec"].items() if k != "parts"} == {
            k: v for k, v in single.items() if k != "parts"
        }
        assert all(p["url"] and "md5" in p for p in got["spec"]["parts"])
    assert outside["status"] == 400 and outside["errorId"] == "invalid.range"


@pytest.mark.parametrize("path, key", [("/download/batch", "objects"), ("/entities/batch", "ids")])
def test_batches_are_capped(http, path, key):
    def item(i: int) -> object:
        return {"objectId": f"{i:036d}"} if key == "objects" else f"{i:036d}"

    assert http.post(path, json={key: [item(i) for i in range(1000)]}).status_code == 200
    r = http.post(path, json={key: [item(i) for i in range(1001)]})
    song_error(r, 413, "batch.too.large", "at most 1000")
    huge = "x" * 600
    r = http.post(path, json={key: [huge] * 1000})
    song_error(r, 413, "payload.too.large")
    song_error(http.post(path, content=b"{nope"), 400, "malformed.body")
    song_error(http.post(path, json={key: 7}), 400, "malformed.body")
    song_error(http.post(path, json={key: [{"deep": [1] * 3}]}), 400, "malformed.body")
    assert http.post(path, json={}).json() == {"results": []}


def test_a_bad_token_fails_the_spec_batch_itself(demo_server, ids):
    body = {"objects": [{"objectId": ids[0]}]}
    r = httpx.post(
        demo_server.url + "/download/batch", json=body, headers=bearer("not-a-token"), timeout=60
    )
    song_error(r, 401, "unauthorized.token")
    # entities are metadata, readable by all as in Song: the token is not looked at
    r = httpx.post(demo_server.url + "/entities/batch", json={"ids": [ids[0]]}, timeout=60)
    assert r.json()["results"][0]["status"] == 200


# -- amplification: what one batch may cost ------------------------------------------------
PART = 5 * MiB  # the `big` platform's part size
BIG_PARTS = 4_000  # each big object's parts: two fill most of an answer's budget


@dataclass
class Big:
    server: Server
    ids: list[str]  # open and published, 4,000 parts each in the platform's eyes
    small: str  # open and published, one part
    http: httpx.Client  # anonymous


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Big]:
    """A platform of its own whose open objects are ~20 GB each in its database (the bytes
    are a few hundred): a specification is written from the database alone."""
    root = tmp_path_factory.mktemp("batch-big")
    with (
        init_server(root / "data", "--part-size", "5") as server,
        httpx.Client(base_url=server.url, timeout=60) as http,
    ):
        admin = bearer(server.admin_token)
        assert http.post("/studies/BIG/", json={"studyId": "BIG"}, headers=admin).is_success
        files = {f"f{i}.bam": os.urandom(100 + i) for i in range(6)}
        analysis_id, ids = submit(http, song_payload("BIG", files, access="open"), admin)
        for name, data in files.items():
            upload(http, ids[name], data, admin)
        r = http.put(f"/studies/BIG/analysis/publish/{analysis_id}", headers=admin)
        assert r.status_code == 200, r.text
        order = [ids[f"f{i}.bam"] for i in range(6)]
        for object_id in order[:5]:
            enlarge(server.data_dir, object_id, BIG_PARTS * PART)
        yield Big(server, order[:5], order[5], http)


def ask(big: Big, ids: list[str]) -> httpx.Response:
    """An anonymous batch of these objects' whole specifications."""
    r = big.http.post("/download/batch", json={"objects": [{"objectId": i} for i in ids]})
    assert r.status_code == 200, r.text[:300]
    return r


def parts_in(results: list[dict]) -> int:
    return sum(len(x["spec"]["parts"]) for x in results if x["status"] == 200)


def test_an_object_asked_again_in_a_batch_is_answered_once(big):
    """Issue 20: one open, big object named again and again by an anonymous caller was
    answered each time (200 copies of a 100 GiB object: a 91 MB answer)."""
    single = big.http.get(f"/download/{big.ids[0]}")
    assert len(single.json()["parts"]) == BIG_PARTS
    r = ask(big, [big.ids[0]] * 20)
    first, *again = r.json()["results"]
    assert first["status"] == 200 and len(first["spec"]["parts"]) == BIG_PARTS
    assert len(again) == 19
    for x in again:
        assert (x["objectId"], x["status"], x["errorId"]) == (big.ids[0], 400, "batch.repeated")
        assert big.ids[0] in x["message"] and "spec" not in x
    assert len(r.content) < 1.1 * len(single.content)


def test_a_batch_answer_holds_at_most_its_parts_and_the_rest_is_asked_again(big):
    """Distinct big objects: an answer stops before the specification that would take it
    past ANSWER_PARTS parts (never before the first); asked again, the rest comes."""
    wanted = [*big.ids, big.small]
    answered: list[str] = []
    for _ in range(len(wanted)):  # each answer answers at least one
        if len(answered) == len(wanted):
            break
        asked = wanted[len(answered) :]
        results = ask(big, asked).json()["results"]
        got = [x["objectId"] for x in results]
        assert got and got == asked[: len(got)], "an answer is a prefix of what was asked"
        assert all(x["status"] == 200 for x in results)
        assert parts_in(results) <= ANSWER_PARTS
        answered += got
    assert answered == wanted
    first = ask(big, wanted).json()["results"]
    assert [x["objectId"] for x in first] == big.ids[: ANSWER_PARTS // BIG_PARTS]


def test_score_client_asks_the_rest_of_a_cut_batch_in_batches(big):
    """The client's lookups against the cut answers: every specification arrives, still by
    batch (a cut is not taken for a server that does not answer batches)."""
    url = big.server.url
    api = Api(ClientSettings(values={**DEFAULTS, "metadata.url": url, "storage.url": url}))
    lookups = Lookups(api)
    try:
        api.download_spec(big.small)  # the first answer says batches are offered
        wanted = [*big.ids, big.small]
        lookups.prefetch([([(i, 0, -1)], []) for i in wanted])
        specs = [lookups.spec(i).result(timeout=60) for i in wanted]
        assert [s.objectId for s in specs] == wanted
        assert [len(s.parts) for s in specs] == [BIG_PARTS] * len(big.ids) + [1]
        assert lookups.specs.mode == "batch"
    finally:
        lookups.close()
        api.close()
