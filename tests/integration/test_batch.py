"""pyscore's batch lookups (an extension the original services lack): advertised on every
answer, each id answered as its own single call would be, capped in ids and bytes.
(Who may read what, per object, is in test_access_matrix.py.)"""

from __future__ import annotations

import httpx
import pytest

from tests.api import bearer, song_error

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
    wanted = [ids[0], UNKNOWN, ids[1], ids[0], ids[-1]]
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
    r = httpx.post(demo_server.url + "/download/batch", json=body, headers=bearer("not-a-token"))
    song_error(r, 401, "unauthorized.token")
    # entities are metadata, readable by all as in Song: the token is not looked at
    r = httpx.post(demo_server.url + "/entities/batch", json={"ids": [ids[0]]})
    assert r.json()["results"][0]["status"] == 200
