"""Who may do what: every kind of caller against downloads, writes and admin calls.

The tables below are the specification; each cell is one test. 401 = a token is needed and the
one given (if any) is not valid; 403 = a valid token lacking the scope the message names.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.api import bearer, mint_tokens, song_error, submit, upload
from tests.conftest import cli_revoke, cli_token, init_server
from tests.publish import md5, song_payload

STUDY = "MTX"
READ = f"PROGRAMDATA-{STUDY}.READ"
WRITE = f"PROGRAMDATA-{STUDY}.WRITE"
SONG = "song.WRITE"

CALLERS = [
    "anonymous",
    "invalid",
    "revoked",
    "expired",
    "other_reader",
    "reader",
    "writer",
    "score_read",
    "song_read",
    "song_write",
    "admin",
]
SCOPES = {
    "expired": READ,
    "revoked": READ,
    "other_reader": "PROGRAMDATA-OTHER.READ",
    "reader": READ,
    "writer": WRITE,
    "score_read": "score.READ",
    "song_read": "song.READ",
    "song_write": "song.WRITE",
}

# GET /download/{id}: 200 = spec with URLs; 400 = refused because the analysis is not published
# (only said to callers who may read the file; a final refusal, as the original's, never a 409
# the Java client would retry for ~51 s); 403 always names PROGRAMDATA-MTX.READ, for an
# anonymous caller too (as the original Score answers).
DOWNLOAD = {
    #               open+published  controlled+published  open+unpublished  controlled+unpublished
    "anonymous": (200, 403, 400, 403),
    "invalid": (401, 401, 401, 401),
    "revoked": (401, 401, 401, 401),
    "expired": (401, 401, 401, 401),
    "other_reader": (200, 403, 400, 403),
    "reader": (200, 200, 400, 400),
    "writer": (200, 403, 400, 403),
    "score_read": (200, 200, 400, 400),
    "song_read": (200, 403, 400, 403),
    "song_write": (200, 403, 400, 403),
    "admin": (200, 200, 400, 400),
}
FILES = ["open+published", "controlled+published", "open+unpublished", "controlled+unpublished"]

# Writes need PROGRAMDATA-MTX.WRITE (or score.WRITE / score.ADMIN); Song's system scope
# song.WRITE writes metadata, not Score's storage.
OK = 200
WRITES = {
    #               submit  publish  upload initiate
    "anonymous": (401, 401, 401),
    "invalid": (401, 401, 401),
    "revoked": (401, 401, 401),
    "expired": (401, 401, 401),
    "other_reader": (403, 403, 403),
    "reader": (403, 403, 403),
    "writer": (OK, OK, OK),
    "score_read": (403, 403, 403),
    "song_read": (403, 403, 403),
    "song_write": (OK, OK, 403),
    "admin": (OK, OK, OK),
}
# Song's rules: a study is created with its own WRITE scope (here NEW-<caller>, which no
# study scope of these callers names) or a system scope; an analysis type is registered
# with Song's system scope song.WRITE (or score.ADMIN).
SONG_CALLS = {
    #               create study  register schema
    "anonymous": (401, 401),
    "invalid": (401, 401),
    "revoked": (401, 401),
    "expired": (401, 401),
    "other_reader": (403, 403),
    "reader": (403, 403),
    "writer": (403, 403),
    "score_read": (403, 403),
    "song_read": (403, 403),
    "song_write": (OK, OK),
    "admin": (OK, OK),
}
WHY_401 = {
    "anonymous": "required",
    "invalid": "Invalid",
    "revoked": "revoked",
    "expired": "expired",
}


def cells(table: dict, columns: list[str]):
    return [
        pytest.param(who, col, table[who][i], id=f"{who}-{col}")
        for who in CALLERS
        for i, col in enumerate(columns)
    ]


# -- helpers --------------------------------------------------------------------------------
def new_token(data_dir, scopes: str, user: str) -> tuple[str, str]:
    """(token id, secret) from the real CLI."""
    expiring = ["--expires-in", "1s"] if user == "expired" else []
    return cli_token(data_dir, scopes, "--user", user, *expiring)


class Env:
    def __init__(self, server, tokens: dict[str, str | None], files: dict[str, str], tmp) -> None:
        self.server = server
        self.tokens = tokens
        self.files = files  # FILES label -> object id
        self.http = httpx.Client(base_url=server.url, timeout=30)
        self.admin = bearer(server.admin_token)
        self.tmp = tmp
        self.count = 0

    def headers(self, who: str) -> dict[str, str]:
        return bearer(self.tokens[who])

    def submit(self, files: dict[str, bytes], access: str = "controlled") -> tuple[str, dict]:
        self.count += 1
        return submit(
            self.http, song_payload(STUDY, files, donor=f"D{self.count}", access=access), self.admin
        )

    def upload(self, object_id: str, data: bytes) -> None:
        upload(self.http, object_id, data, self.admin)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("access")
    with init_server(root / "data") as server:
        tokens: dict[str, str | None] = {
            "anonymous": None,
            "invalid": "not-a-real-token",
            "admin": server.admin_token,
        }
        e = Env(server, tokens, {}, root)
        try:
            # The expiring and the revoked token go through the real CLI, the expiring one
            # first; the others are minted in-process (the CLI costs about a second each).
            with ThreadPoolExecutor(2) as pool:
                futures = {
                    who: pool.submit(new_token, server.data_dir, SCOPES[who], who)
                    for who in ("expired", "revoked")
                }
                tokens.update(
                    mint_tokens(
                        server.data_dir,
                        {who: scope for who, scope in SCOPES.items() if who not in futures},
                    )
                )
                made = {who: future.result() for who, future in futures.items()}
            # made before now, so expired by a second from now however long the CLI took
            expired_by = time.monotonic() + 1.0
            tokens.update({who: secret for who, (_, secret) in made.items()})
            cli_revoke(server.data_dir, made["revoked"][0])
            r = e.http.post(f"/studies/{STUDY}/", headers=e.admin, json={"studyId": STUDY})
            assert r.status_code == 200, r.text
            for access in ("open", "controlled"):
                for published in ("published", "unpublished"):
                    data = os.urandom(2048)
                    aid, ids = e.submit({f"{access}-{published}.bam": data}, access)
                    (object_id,) = ids.values()
                    e.upload(object_id, data)
                    if published == "published":
                        r = e.http.put(f"/studies/{STUDY}/analysis/publish/{aid}", headers=e.admin)
                        assert r.status_code == 200, r.text
                    e.files[f"{access}+{published}"] = object_id
            time.sleep(max(0.0, expired_by + 0.1 - time.monotonic()))  # --expires-in 1s
            yield e
        finally:
            e.http.close()


def expect(response: httpx.Response, who: str, status: int, scope: str) -> None:
    if status == 401:
        song_error(response, 401, "unauthorized.token", WHY_401[who])
        assert response.headers.get("www-authenticate", "").lower().startswith("bearer")
    elif status == 403:
        song_error(response, 403, "forbidden.token", scope)
    elif status == 400:
        song_error(response, 400, "analysis.not.published", "UNPUBLISHED")
    else:
        assert response.status_code == status, response.text


# -- downloads ------------------------------------------------------------------------------
@pytest.mark.parametrize("who, file, status", cells(DOWNLOAD, FILES))
def test_download(env, who, file, status):
    object_id = env.files[file]
    r = env.http.get(f"/download/{object_id}", headers=env.headers(who))
    expect(r, who, status, READ)
    if status == 200:
        spec = r.json()
        assert spec["objectId"] == object_id
        assert all(q["url"] for q in spec["parts"])


@pytest.mark.parametrize("who", CALLERS)
def test_download_batch_answers_each_object_as_its_own_download(env, who):
    """POST /download/batch (pyscore's extension): each object gets the status its own
    GET /download/{id} gets (the same access decision, per object), a refusal never fails
    the others; a token that is not valid fails the request itself (401)."""
    unknown = "00000000-0000-0000-0000-00000000dead"
    wanted = [env.files[f] for f in FILES] + [unknown]
    r = env.http.post(
        "/download/batch",
        json={"objects": [{"objectId": i} for i in wanted]},
        headers=env.headers(who),
    )
    if who in WHY_401 and who != "anonymous":
        expect(r, who, 401, READ)
        return
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["objectId"] for x in results] == wanted
    for x, status in zip(results, (*DOWNLOAD[who], 404)):
        assert x["status"] == status, x
        if status == 200:
            assert x["spec"]["objectId"] == x["objectId"]
            assert all(q["url"] for q in x["spec"]["parts"])
            assert "errorId" not in x
        else:
            assert "spec" not in x
            assert {403: "forbidden.token", 400: "analysis.not.published", 404: "file.not.found"}[
                status
            ] == x["errorId"]
        if status == 403:
            assert READ in x["message"]


# -- writes ---------------------------------------------------------------------------------
def do_submit(env: Env, who: str) -> httpx.Response:
    files = {f"w-{who}.bam": os.urandom(64)}
    return env.http.post(
        f"/submit/{STUDY}", json=song_payload(STUDY, files), headers=env.headers(who)
    )


def do_publish(env: Env, who: str) -> httpx.Response:
    # an analysis whose file is uploaded: publishing it (again) succeeds when allowed
    if "publishable" not in env.files:
        data = os.urandom(100)
        aid, ids = env.submit({"publishable.bam": data})
        env.upload(ids["publishable.bam"], data)
        env.files["publishable"] = aid
    return env.http.put(
        f"/studies/{STUDY}/analysis/publish/{env.files['publishable']}", headers=env.headers(who)
    )


def do_initiate(env: Env, who: str) -> httpx.Response:
    data = os.urandom(300)
    _, ids = env.submit({f"u-{who}.bam": data})
    return env.http.post(
        f"/upload/{ids[f'u-{who}.bam']}/uploads",
        headers=env.headers(who),
        params={"fileSize": len(data), "md5": md5(data)},
    )


WRITE_CALLS = {"submit": do_submit, "publish": do_publish, "upload initiate": do_initiate}


@pytest.mark.parametrize("who, call, status", cells(WRITES, list(WRITE_CALLS)))
def test_write(env, who, call, status):
    r = WRITE_CALLS[call](env, who)
    expect(r, who, status, WRITE)
    if status == OK and call == "submit":
        assert r.json()["status"] == "OK"
    if status == OK and call == "upload initiate":
        assert r.json()["parts"][0]["url"]


# -- studies and analysis types -------------------------------------------------------------
def do_create_study(env: Env, who: str) -> httpx.Response:
    study = f"NEW-{who}"
    return env.http.post(
        f"/studies/{study}/", json={"studyId": study, "name": who}, headers=env.headers(who)
    )


def do_register_schema(env: Env, who: str) -> httpx.Response:
    schema = {
        "type": "object",
        "required": ["experiment"],
        "properties": {"experiment": {"type": "object"}},
    }
    return env.http.post(
        "/schemas", json={"name": f"type-{who}", "schema": schema}, headers=env.headers(who)
    )


SONG_FUNCS = {"create study": do_create_study, "register schema": do_register_schema}


@pytest.mark.parametrize("who, call, status", cells(SONG_CALLS, list(SONG_FUNCS)))
def test_study_and_system_calls(env, who, call, status):
    r = SONG_FUNCS[call](env, who)
    expect(r, who, status, f"PROGRAMDATA-NEW-{who}.WRITE" if call == "create study" else SONG)
    if call == "create study":
        exists = env.http.get(f"/studies/NEW-{who}").status_code == 200
        assert exists == (status == OK)
    else:
        exists = env.http.get(f"/schemas/type-{who}").status_code == 200
        assert exists == (status == OK)
