"""Hostile and malformed input against the embedded default (issue 12): each finding
reproduced through the real server, and what a caller or operator sees now.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pytest

from tests.api import bearer, mint_tokens, song_error, submit, upload
from tests.conftest import Server, init_server, local_store_only
from tests.publish import MiB, md5, song_payload


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

    def initiated(self, study: str, size: int) -> tuple[str, str, bytes, dict]:
        """(analysis id, object id, bytes, upload spec) of a new file in a new study whose
        upload is initiated."""
        self.study(study)
        data = os.urandom(size)
        aid, ids = submit(self.http, song_payload(study, {"u.bam": data}), self.admin)
        r = self.http.post(
            f"/upload/{ids['u.bam']}/uploads",
            params={"fileSize": size, "md5": md5(data)},
            headers=self.admin,
        )
        assert r.status_code == 200, r.text
        return aid, ids["u.bam"], data, r.json()

    def open_file_url(self, study: str) -> tuple[str, bytes, str]:
        """(object id, bytes, whole-object signed URL) of a new open file in a new study."""
        self.study(study)
        _, object_id, data = self.published(study, access="open")
        spec = self.http.get(f"/download/{object_id}", params={"external": "true"}).json()
        return object_id, data, spec["parts"][0]["url"]

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


# -- B3: a body is read only for a caller who may send it, and only up to a cap -------------
def answer_before_body(world, path: str, length: int, token: str | None = None) -> int | None:
    """Send a POST's headers declaring `length` bytes and one byte of body, then wait 5 s for
    an answer; its status, or None if the server waited for the body instead."""
    port = int(world.url.rsplit(":", 1)[1])
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n{{"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(head.encode())
        try:
            first = conn.recv(200)
        except TimeoutError:
            return None
    return int(first.split()[1]) if first.startswith(b"HTTP/") else None


def test_anonymous_writes_are_refused_before_their_body_is_read(world):
    world.study("BODY")
    # 10 MiB declared, one byte sent: the refusal comes without waiting for the rest
    for path in ("/submit/BODY", "/studies/NEWONE/", "/schemas"):
        assert answer_before_body(world, path, 10 * MiB) == 401, path
    reader = world.tokens(reader="PROGRAMDATA-BODY.READ")["reader"]
    assert answer_before_body(world, "/submit/BODY", 10 * MiB, reader) == 403


def test_request_bodies_over_the_cap_get_413(world):
    admin = world.server.admin_token
    # declared too large: refused at once
    assert answer_before_body(world, "/submit/BODY", 400 * MiB, admin) == 413
    # streamed without a length: refused once past the cap (16 MiB by default)
    chunks = (b" " * MiB for _ in range(40))
    r = world.http.post(
        "/submit/BODY",
        content=chunks,
        headers={**world.admin, "Content-Type": "application/json"},
    )
    song_error(r, 413, "payload.too.large", "limit")
    # under the cap: read and judged
    r = world.http.post("/submit/BODY", content=b"[]" + b" " * MiB, headers=world.admin)
    song_error(r, 400, None)


# -- B4: what reaches a part URL after the part is done changes nothing ---------------------
@local_store_only
def test_part_urls_cannot_change_a_finished_part(world):
    aid, object_id, data, spec = world.initiated("PARTS", 3000)
    (part,) = spec["parts"]
    url = part["url"]
    # a refused body (wrong size) leaves nothing behind, before or after the good one
    song_error(httpx.put(url, content=b"x" * 10), 400, "upload.part.size")
    put = httpx.put(url, content=data)
    assert put.status_code == 200, put.text
    song_error(httpx.put(url, content=b"evil" * 100), 400, "upload.part.size")
    params = {"uploadId": spec["uploadId"], "partNumber": 1, "md5": md5(data), "etag": md5(data)}
    r = world.http.post(f"/upload/{object_id}/parts", params=params, headers=world.admin)
    assert r.status_code == 200, r.text
    # once recorded, the part takes no body at all, even one of the right size
    song_error(httpx.put(url, content=b"e" * len(data)), 403, "upload.part.finalized")
    song_error(httpx.put(url, content=b"e"), 403, "upload.part.finalized")
    r = world.http.post(
        f"/upload/{object_id}", params={"uploadId": spec["uploadId"]}, headers=world.admin
    )
    assert r.status_code == 200, r.text
    # a completed upload's part URL leads nowhere
    song_error(httpx.put(url, content=b"e" * len(data)), 404, "upload.not.found")
    r = world.http.put(f"/studies/PARTS/analysis/publish/{aid}", headers=world.admin)
    assert r.status_code == 200, r.text
    spec = world.http.get(f"/download/{object_id}", headers=world.admin).json()
    got = httpx.get(spec["parts"][0]["url"])
    assert md5(got.content) == md5(data), "the stored object is not what was uploaded"


# -- B10: one signature, one meaning --------------------------------------------------------
@local_store_only
def test_signed_fields_cannot_be_reshuffled(world):
    world.study("SIGN")
    _, object_id, data = world.published("SIGN", access="open")
    r = world.http.get(f"/file/{object_id}/download", follow_redirects=False)
    assert r.status_code == 303, r.text
    url = r.headers["location"]
    assert httpx.get(url).content == data
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    name = query.pop("name")
    # before: range="" + name=N and range="\nN" + no name signed the same message (then 500)
    moved = {**query, "range": "\n" + name}
    r = httpx.get(urlunsplit(parts._replace(query=urlencode(moved))))
    song_error(r, 403, None)
    assert r.json()["errorId"].startswith("signature.")
    # ids that end in a newline are not ids
    r = httpx.get(url.replace(object_id, object_id + "%0A"))
    assert r.status_code in (403, 404), r.text


# -- B5: what init leaves on disk, URL lifetimes, signing keys -----------------------------
def mode(path) -> int:
    return path.stat().st_mode & 0o777


@local_store_only
def test_platform_files_are_private_to_the_operator(world):
    world.study("PRIV")
    _, object_id, _ = world.published("PRIV")
    data_dir = world.server.data_dir
    assert mode(data_dir) == 0o700
    assert mode(data_dir / "server.json") == 0o600
    if not os.environ.get("PYSCORE_TEST_POSTGRES"):
        assert mode(data_dir / "pyscore.sqlite") == 0o600
    stored = data_dir / "objects" / "data" / object_id
    assert stored.exists() and mode(stored) & 0o077 == 0, oct(mode(stored))


def ring_secret(data_dir) -> tuple[str, bytes]:
    """The newest signing key as the database holds it (what a reader of the file gets)."""
    import json

    from pyscore.server.db import Database
    from pyscore.server.settings import Settings
    from pyscore.server.tables import Setting

    db = Database(Settings.load(data_dir).database_url)
    try:
        with db.session() as s:
            row = s.get(Setting, "url_signing_keys") or s.get(Setting, "url_signing_secret")
            value = row.value
    finally:
        db.engine.dispose()
    if value.startswith("["):
        key = json.loads(value)[-1]
        return key["id"], bytes.fromhex(key["secret"])
    return "k0", bytes.fromhex(value)


def forged(url: str, object_id: str, key: bytes, kid: str, lifetime: int) -> str:
    """A whole-object URL for `object_id` signed with `key`, living `lifetime` seconds."""
    import time

    from pyscore.server.store.local import LocalStore

    exp = int(time.time()) + lifetime
    path = f"/store/objects/{object_id}"
    query = {"Expires": exp, "exp": exp, "kid": kid}
    try:
        sig = LocalStore.sign(key, "GET", path, exp, "", "")
    except (TypeError, AttributeError):  # the store before keys: a method on one key
        sig = LocalStore(world_dir_tmp(), key).sign("GET", path, exp, "", "")
    return f"{url}{path}?{urlencode({**query, 'sig': sig})}"


def world_dir_tmp():
    import tempfile

    return tempfile.mkdtemp()


@local_store_only
def test_the_database_alone_cannot_forge_a_years_long_url(world):
    world.study("FORGE")
    _, object_id, _ = world.published("FORGE", access="controlled")
    kid, secret = ring_secret(world.server.data_dir)
    url = forged(world.url, object_id, secret, kid, 10 * 365 * 86400)
    song_error(httpx.get(url), 403, None)
    assert httpx.get(url).json()["errorId"].startswith("signature.")


@local_store_only
def test_signing_keys_rotate_without_breaking_urls_and_can_void_them(world):
    import time

    from tests.conftest import SERVER, run

    object_id, data, before = world.open_file_url("ROT")
    assert httpx.get(before).content == data
    d = str(world.server.data_dir)
    out = run(SERVER, "signing-key", "rotate", "--data-dir", d, check=True)
    new_kid = out.stdout.strip()
    listed = run(SERVER, "signing-key", "list", "--data-dir", d, check=True).stdout
    assert f"{new_kid}\t" in listed and "signing" in listed and "verifying" in listed
    assert httpx.get(before).content == data, "a rotation broke a URL already handed out"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # servers pick the new key up within keys.REFRESH
        spec = world.http.get(f"/download/{object_id}", params={"external": "true"}).json()
        if f"kid={new_kid}" in spec["parts"][0]["url"]:
            break
        time.sleep(1)
    after = spec["parts"][0]["url"]
    assert f"kid={new_kid}" in after
    assert httpx.get(after).content == data
    run(SERVER, "signing-key", "rotate", "--data-dir", d, "--drop-old", check=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and httpx.get(after).status_code == 200:
        time.sleep(1)
    song_error(httpx.get(after), 403, None)
    song_error(httpx.get(before), 403, None)


# -- B6: opening a file to everyone needs READ as well as WRITE -----------------------------
def test_write_only_token_cannot_open_a_controlled_file(world):
    world.study("ACC")
    _, object_id, _ = world.published("ACC")
    t = world.tokens(writer="PROGRAMDATA-ACC.WRITE")
    song_error(world.http.get(f"/download/{object_id}", headers=bearer(t["writer"])), 403)
    r = world.http.put(
        f"/studies/ACC/files/{object_id}",
        json={"fileAccess": "open"},
        headers=bearer(t["writer"]),
    )
    song_error(r, 403, None, "PROGRAMDATA-ACC.READ")
    song_error(world.http.get(f"/download/{object_id}"), 403)
    # other fields stay a writer's to change
    r = world.http.put(
        f"/studies/ACC/files/{object_id}", json={"info": {"k": "v"}}, headers=bearer(t["writer"])
    )
    assert r.status_code == 200, r.text
    # READ and WRITE together (here: the admin) may open it
    r = world.http.put(
        f"/studies/ACC/files/{object_id}", json={"fileAccess": "open"}, headers=world.admin
    )
    assert r.status_code == 200, r.text
    assert world.http.get(f"/download/{object_id}").status_code == 200


# -- B11: malformed input is a 4xx naming the problem, never a 500 --------------------------
HUGE = "9" * 25  # beyond any 64-bit integer


@pytest.mark.parametrize(
    "path, params",
    [
        ("/entities", {"page": HUGE}),
        ("/entities", {"page": str(2**62)}),
        ("/schemas", {"limit": HUGE}),
        ("/schemas", {"offset": "-" + HUGE}),
        ("/schemas/sequencingRead", {"version": HUGE}),
        ("/studies/MAL/analysis/paginated", {"limit": HUGE}),
        ("/studies/MAL/analysis/paginated", {"offset": HUGE}),
    ],
)
def test_out_of_range_numbers_are_400(world, path, params):
    if world.http.get("/studies/MAL").status_code == 404:
        world.study("MAL")
    song_error(world.http.get(path, params=params), 400, None)


def test_part_numbers_out_of_range_are_400(world):
    _, object_id, _, spec = world.initiated("MALP", 100)
    params = {"uploadId": spec["uploadId"], "partNumber": HUGE}
    r = world.http.delete(f"/upload/{object_id}/parts", params=params, headers=world.admin)
    song_error(r, 400, None)


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,  # 100k deep
        b'{"studyId": ' + b"1" * 5000 + b"}",  # a 5000-digit number
    ],
    ids=["deep", "long-number"],
)
def test_unreadable_json_is_a_4xx(world, body):
    world.study("JSONB") if world.http.get("/studies/JSONB").status_code == 404 else None
    r = world.http.post(
        "/submit/JSONB", content=body, headers={**world.admin, "Content-Type": "application/json"}
    )
    song_error(r, 422, "payload.parsing")
    r = world.http.post(
        "/htsget/reads/none", content=body, headers={"Content-Type": "application/json"}
    )
    assert 400 <= r.status_code < 500, r.text[:300]


@local_store_only
def test_a_5000_digit_range_header_is_ignored_not_a_500(world):
    _, data, url = world.open_file_url("RNG")
    r = httpx.get(url, headers={"Range": "bytes=" + "1" * 5000 + "-"})
    assert r.status_code == 200 and r.content == data


# -- B12: names and fields are what they claim to be ----------------------------------------
@pytest.mark.parametrize("name", ["..", ".", "x.bam\n", "a/b.bam"])
def test_submit_refuses_names_that_are_not_file_names(world, name):
    if world.http.get("/studies/NAMES").status_code == 404:
        world.study("NAMES")
    payload = song_payload("NAMES", {"ok.bam": b"x"}, file_type="BAM")
    payload["files"][0]["fileName"] = name
    r = world.http.post("/submit/NAMES", json=payload, headers=world.admin)
    song_error(r, 400, "schema.violation")


@pytest.mark.parametrize(
    "change",
    [
        {"fileSize": "abc"},
        {"fileSize": -1},
        {"fileSize": True},
        {"fileSize": 10**30},
        {"info": "x"},
        {"dataType": {}},
        {"fileMd5sum": "g" * 32},
    ],
    ids=lambda c: f"{next(iter(c))}={next(iter(c.values()))!r}"[:30],
)
def test_file_update_refuses_fields_of_the_wrong_type(world, change):
    if world.http.get("/studies/UPD").status_code == 404:
        world.study("UPD")
    data = os.urandom(10)
    _, ids = submit(world.http, song_payload("UPD", {"u.bam": data}, donor="U"), world.admin)
    (object_id,) = ids.values()
    before = world.http.get(f"/studies/UPD/files/{object_id}").json()
    r = world.http.put(f"/studies/UPD/files/{object_id}", json=change, headers=world.admin)
    song_error(r, 400, "malformed.parameter")
    assert world.http.get(f"/studies/UPD/files/{object_id}").json() == before


# -- B7: the page's sign-in cannot be driven from another site; pages refuse framing ------
def sign_in(world, url: str, token: str, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{url}/portal/sign-in",
        data={"token": token, "next": "/repository"},
        headers=headers,
        follow_redirects=False,
    )


def test_sign_in_and_out_refuse_other_sites(world):
    token = world.server.admin_token
    for headers in (
        {"Origin": "https://evil.example"},
        {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"},
        {"Sec-Fetch-Site": "same-site"},
    ):
        r = sign_in(world, world.url, token, **headers)
        assert r.status_code == 403, (headers, r.status_code)
        assert "set-cookie" not in r.headers
        out = httpx.post(f"{world.url}/portal/sign-out", headers=headers, follow_redirects=False)
        assert out.status_code == 403 and "set-cookie" not in out.headers
    ok = sign_in(world, world.url, token, Origin=world.url, **{"Sec-Fetch-Site": "same-origin"})
    assert ok.status_code == 303 and "score_token=" in ok.headers["set-cookie"]


def test_pages_carry_csp_and_refuse_framing(world):
    page = world.http.get("/repository")
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert world.http.get("/isAlive").headers["x-frame-options"] == "DENY"


# -- B8/B9: behind a proxy, and the Host header --------------------------------------------
@local_store_only  # the ping URL is the store's own (S3 signs its own host)
def test_a_forged_host_reaches_no_url(world):
    evil = {"Host": "evil.example"}
    r = world.http.get("/download/ping", headers=evil)
    song_error(r, 400, "host.not.allowed")
    assert world.http.get("/isAlive", headers=evil).status_code == 200  # health checks
    page = world.http.get("/repository", headers=evil)
    assert page.status_code == 400 and "evil.example/" not in page.text
    # the listening address's names are answered, and URLs use them
    port = world.url.rsplit(":", 1)[1]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}"):
        ping = world.http.get("/download/ping", headers={"Host": host})
        assert ping.status_code == 200 and ping.text.startswith(f"http://{host}/"), ping.text
    # X-Forwarded-* from a peer nobody trusts is ignored
    r = world.http.get(
        "/download/ping",
        headers={"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"},
    )
    assert r.status_code == 200 and r.text.startswith(world.url + "/"), r.text


@local_store_only  # the ping URL is the store's own (S3 signs its own host)
def test_behind_a_tls_proxy_the_cookie_is_secure(tmp_path):
    server = init_server(tmp_path / "data", "--public-url", "https://data.example.org")
    server.start()
    try:
        r = sign_in(None, server.url, server.admin_token)
        assert r.status_code == 303, r.text
        cookie = r.headers["set-cookie"]
        assert "score_token=" in cookie and "secure" in cookie.lower(), cookie
        ping = httpx.get(f"{server.url}/download/ping", headers={"Host": "other.example"})
        assert ping.text.startswith("https://data.example.org/"), ping.text
    finally:
        server.stop()


@local_store_only  # the ping URL is the store's own (S3 signs its own host)
def test_trusted_proxies_say_what_the_client_used(tmp_path):
    server = init_server(tmp_path / "data")
    server.start(
        env={
            "PYSCORE_TRUSTED_PROXIES": "127.0.0.1/32",
            "PYSCORE_ALLOWED_HOSTS": "data.example.org",
        }
    )
    try:
        forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "data.example.org"}
        ping = httpx.get(f"{server.url}/download/ping", headers=forwarded)
        assert ping.status_code == 200 and ping.text.startswith("https://data.example.org/")
        r = sign_in(None, server.url, server.admin_token, **forwarded)
        assert r.status_code == 303 and "secure" in r.headers["set-cookie"].lower()
        evil = {**forwarded, "X-Forwarded-Host": "evil.example"}
        song_error(httpx.get(f"{server.url}/download/ping", headers=evil), 400)
    finally:
        server.stop()


# -- B13: the OpenAPI document declares the errors; 405 says what is allowed ---------------
def test_openapi_declares_error_answers_and_405_has_allow(world):
    spec = world.http.get("/openapi.json").json()
    download = spec["paths"]["/download/{object_id}"]["get"]["responses"]
    for code in ("400", "401", "403", "404", "503"):
        schema = download[code]["content"]["application/json"]["schema"]
        assert schema["$ref"].endswith("/SongError"), (code, schema)
    ticket = spec["paths"]["/htsget/reads/{object_id}"]["get"]["responses"]
    assert "application/vnd.ga4gh.htsget.v1.3.0+json" in ticket["403"]["content"]
    assert "application/vnd.ga4gh.htsget.v1.3.0+json" in ticket["200"]["content"]
    publish = spec["paths"]["/studies/{study_id}/analysis/publish/{analysis_id}"]["put"]
    assert "application/json" in publish["responses"]["409"]["content"]
    r = world.http.delete("/isAlive")
    song_error(r, 405, "method.not.allowed")
    assert r.headers["allow"] == "GET"
