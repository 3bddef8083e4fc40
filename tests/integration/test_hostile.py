"""Hostile and malformed input against the embedded default (issue 12): each finding
reproduced through the real server, and what a caller or operator sees now.
"""

from __future__ import annotations

import os

import httpx
import pytest

from tests.api import bearer, mint_tokens, song_error, submit, upload
from tests.conftest import Server, init_server
from tests.publish import song_payload


class World:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.url = server.url
        self.admin = bearer(server.admin_token)
        self.http = httpx.Client(base_url=server.url, timeout=60)
        self.count = 0

    def study(self, study: str) -> None:
        r = self.http.post(f"/studies/{study}/", json={"studyId": study}, headers=self.admin)
        assert r.status_code == 200, r.text

    def published(
        self, study: str, access: str = "controlled", size: int = 1000
    ) -> tuple[str, str, bytes]:
        """(analysis id, object id, bytes) of a new published one-file analysis."""
        self.count += 1
        data = os.urandom(size)
        name = f"f{self.count}.bam"
        aid, ids = submit(
            self.http,
            song_payload(study, {name: data}, donor=f"D{self.count}", access=access),
            self.admin,
        )
        upload(self.http, ids[name], data, self.admin)
        r = self.http.put(f"/studies/{study}/analysis/publish/{aid}", headers=self.admin)
        assert r.status_code == 200, r.text
        return aid, ids[name], data

    def tokens(self, **scopes: str) -> dict[str, str]:
        return mint_tokens(self.server.data_dir, scopes)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    with init_server(tmp_path_factory.mktemp("hostile") / "data") as server:
        w = World(server)
        try:
            yield w
        finally:
            w.http.close()


# -- B2: study ids are exact, scope words are not ------------------------------------------
def test_study_ids_in_scopes_are_case_exact(world):
    world.study("CASEA")
    world.study("casea")
    aid, object_id, _ = world.published("CASEA")
    t = world.tokens(
        lower_read="PROGRAMDATA-casea.READ",
        lower_write="PROGRAMDATA-casea.WRITE",
        upper_read="programdata-CASEA.read",
    )
    # the other study's token is refused CASEA's controlled bytes and its analyses
    song_error(
        world.http.get(f"/download/{object_id}", headers=bearer(t["lower_read"])),
        403,
        None,
        "PROGRAMDATA-CASEA.READ",
    )
    r = world.http.put(f"/studies/CASEA/analysis/unpublish/{aid}", headers=bearer(t["lower_write"]))
    song_error(r, 403, None, "PROGRAMDATA-CASEA.WRITE")
    state = world.http.get(f"/studies/CASEA/analysis/{aid}").json()["analysisState"]
    assert state == "PUBLISHED"
    # the words of a scope still match ignoring case, as in the original
    r = world.http.get(f"/download/{object_id}", headers=bearer(t["upper_read"]))
    assert r.status_code == 200, r.text
    listed = world.http.get("/listing", headers=bearer(t["lower_read"])).json()
    assert object_id not in {e["id"] for e in listed}
