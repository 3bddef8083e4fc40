"""The access decision without a server: who may READ, WRITE or ADMIN what, the status and
scope a refusal names, and how a token becomes a caller (hashed at rest, revocable, expiring).

Callers are made the way the server makes them: a token stored with `create_token`, then
resolved from its Authorization header by `principal_for`, on an in-memory database."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Callable, Optional

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from pyscore.server.auth import (
    Action,
    Principal,
    authorize,
    can,
    create_token,
    expired_at,
    principal_for,
    readable_studies,
    study_scope,
    validate_scopes,
)
from pyscore.server.db import parse_duration
from pyscore.server.errors import ApiError
from pyscore.server.tables import Token
from tests.unit.memdb import memory_session

STUDY = "CASEA"
READ, WRITE, ADMIN = Action.READ, Action.WRITE, Action.ADMIN

# The callers of the matrix, by the scopes their tokens carry (None: no token at all).
CALLERS: dict[str, Optional[list[str]]] = {
    "anonymous": None,
    "read_all": ["score.READ"],
    "write_all": ["score.WRITE"],
    "admin": ["score.ADMIN"],
    "study_read": [f"PROGRAMDATA-{STUDY}.READ"],
    "study_write": [f"PROGRAMDATA-{STUDY}.WRITE"],
    "other_study": ["PROGRAMDATA-OTHER.READ", "PROGRAMDATA-OTHER.WRITE"],
}

OK = "ok"
R = f"PROGRAMDATA-{STUDY}.READ"  # a 403 naming this scope
W = f"PROGRAMDATA-{STUDY}.WRITE"
A = "score.ADMIN"
# The specification, one cell per (caller, access, action) on a file of study CASEA:
# OK, 401, or the scope a 403 names.
#                 READ open  READ controlled  WRITE open  WRITE controlled  ADMIN open  ADMIN ctl
MATRIX: dict[str, tuple[object, ...]] = {
    "anonymous": (OK, 401, 401, 401, 401, 401),
    "read_all": (OK, OK, W, W, A, A),
    "write_all": (OK, R, OK, OK, A, A),
    "admin": (OK, OK, OK, OK, OK, OK),
    "study_read": (OK, OK, W, W, A, A),
    "study_write": (OK, R, OK, OK, A, A),
    "other_study": (OK, R, W, W, A, A),
}
COLUMNS = [(action, access) for action in (READ, WRITE, ADMIN) for access in ("open", "controlled")]
CELLS = [
    pytest.param(caller, action, access, row[i], id=f"{caller}-{action.value}-{access}")
    for caller, row in MATRIX.items()
    for i, (action, access) in enumerate(COLUMNS)
]

Mint = Callable[..., Optional[Principal]]


@pytest.fixture(scope="module")
def session() -> Iterator[Session]:
    """One database for the module: every test makes tokens of its own in it."""
    with memory_session() as s:
        yield s


@pytest.fixture(scope="module")
def mint(session: Session) -> Mint:
    """A caller holding a fresh token with these scopes, as the server resolves it."""

    def make(scopes: Optional[list[str]], **token_fields: object) -> Optional[Principal]:
        if scopes is None:
            return principal_for(session, None)
        token, secret = create_token(session, "someone", scopes)
        for name, value in token_fields.items():
            setattr(token, name, value)
        session.flush()
        return principal_for(session, f"Bearer {secret}")

    return make


def refusal(call: Callable[[], object]) -> ApiError:
    with pytest.raises(ApiError) as caught:
        call()
    return caught.value


# -- the matrix ----------------------------------------------------------------------------
def test_the_matrix_names_every_caller_and_every_column():
    assert set(MATRIX) == set(CALLERS)
    assert all(len(row) == len(COLUMNS) for row in MATRIX.values())


@pytest.mark.parametrize(("caller", "action", "access", "expected"), CELLS)
def test_access_matrix(mint: Mint, caller: str, action: Action, access: str, expected: object):
    who = mint(CALLERS[caller])
    call = lambda: authorize(who, action, STUDY, access, what="do it")  # noqa: E731
    if expected == OK:
        call()
        assert can(who, action, STUDY, access)
        return
    error = refusal(call)
    assert not can(who, action, STUDY, access)
    if expected == 401:
        assert (error.status, error.error_id) == (401, "unauthorized.token")
        assert error.message == "A valid access token is required to do it"
    else:
        assert (error.status, error.error_id) == (403, "forbidden.token")
        assert error.message == f"Token missing required scope {expected} to do it"


# Song's decisions: METADATA (a study's metadata: Song's @studySecurity) and SYSTEM (Song's
# @systemSecurity), by the scopes of SONG's own tests (`song.READ` may not write).
SONG_MATRIX = [
    (["song.WRITE"], Action.METADATA, OK),
    (["song.WRITE"], Action.SYSTEM, OK),
    (["song.WRITE"], WRITE, W),  # Score's storage wants a Score scope
    (["song.READ"], Action.METADATA, W),
    (["song.READ"], Action.SYSTEM, "song.WRITE"),
    ([W], Action.METADATA, OK),
    ([W], Action.SYSTEM, "song.WRITE"),
    (["PROGRAMDATA-OTHER.WRITE"], Action.METADATA, W),
    (["score.WRITE"], Action.METADATA, OK),
    (["score.WRITE"], Action.SYSTEM, "song.WRITE"),
    (["score.ADMIN"], Action.SYSTEM, OK),
]


@pytest.mark.parametrize(("scopes", "action", "expected"), SONG_MATRIX)
def test_song_scopes(mint: Mint, scopes: list[str], action: Action, expected: str):
    who = mint(scopes)
    if expected == OK:
        authorize(who, action, STUDY, what="do it")
        return
    error = refusal(lambda: authorize(who, action, STUDY, what="do it"))
    assert (error.status, error.error_id) == (403, "forbidden.token")
    assert error.message == f"Token missing required scope {expected} to do it"


@pytest.mark.parametrize(
    ("scopes", "action", "needed"),
    [
        (["PROGRAMDATA-CASEA.READ"], READ, "score.READ"),
        (["PROGRAMDATA-CASEA.WRITE"], WRITE, "score.WRITE"),
        (["score.READ"], WRITE, "score.WRITE"),
        (["score.WRITE"], ADMIN, "score.ADMIN"),
    ],
)
def test_without_a_study_only_the_system_scope_will_do(mint: Mint, scopes, action, needed):
    who = mint(scopes)
    error = refusal(lambda: authorize(who, action, None, "controlled"))
    assert error.status == 403 and f"scope {needed} " in error.message


@pytest.mark.parametrize(
    ("action", "study", "status", "needed"),
    [
        (READ, STUDY, 403, "PROGRAMDATA-CASEA.READ"),
        (WRITE, STUDY, 403, "PROGRAMDATA-CASEA.WRITE"),
        (READ, None, 403, "score.READ"),
        (WRITE, None, 403, "score.WRITE"),
        (ADMIN, STUDY, 401, None),  # admin calls always ask for a token first
    ],
)
def test_anonymous_forbidden_answers_403_naming_the_scope(action, study, status, needed):
    error = refusal(
        lambda: authorize(None, action, study, "controlled", "download", anonymous_forbidden=True)
    )
    assert error.status == status
    if needed:
        assert error.message == (
            f"Token missing required scope {needed} to download (no access token was sent)"
        )


def test_anonymous_forbidden_still_lets_anyone_read_open_files():
    authorize(None, READ, STUDY, "open", anonymous_forbidden=True)


# -- study ids exact, scope words any case ---------------------------------------------------
@pytest.mark.parametrize(
    ("scope", "study", "action", "allowed"),
    [
        ("PROGRAMDATA-casea.READ", "CASEA", READ, False),
        ("PROGRAMDATA-casea.READ", "casea", READ, True),
        ("PROGRAMDATA-CASEA.READ", "casea", READ, False),
        ("programdata-CASEA.read", "CASEA", READ, True),
        ("ProgramData-CASEA.Write", "CASEA", WRITE, True),
        ("PROGRAMDATA-CaseA.WRITE", "CASEA", WRITE, False),
        ("score.read", "CASEA", READ, True),
        ("SCORE.Write", "CASEA", WRITE, True),
        ("Score.Admin", "anything", ADMIN, True),
        ("PROGRAMDATA-CASEA.READ", "CASEAB", READ, False),  # no prefix matching
        ("PROGRAMDATA-CASE.READ", "CASEA", READ, False),
        ("PROGRAMDATA-A.B.READ", "A.B", READ, True),  # a dot inside a study id
        ("PROGRAMDATA-A.B.READ", "A", READ, False),
    ],
)
def test_study_ids_are_exact_and_scope_words_ignore_case(mint: Mint, scope, study, action, allowed):
    assert can(mint([scope]), action, study, "controlled") is allowed


@pytest.mark.parametrize(
    ("scopes", "studies", "readable"),
    [
        (None, ["CASEA", "OTHER"], set()),
        (["score.READ"], ["CASEA"], None),
        (["score.admin"], ["CASEA"], None),
        (["score.WRITE"], ["CASEA"], set()),
        (["PROGRAMDATA-CASEA.READ"], ["CASEA", "casea", "OTHER"], {"CASEA"}),
        (["PROGRAMDATA-casea.read"], ["CASEA", "casea"], {"casea"}),
        (["PROGRAMDATA-CASEA.WRITE"], ["CASEA"], set()),
        (
            ["PROGRAMDATA-CASEA.READ", "PROGRAMDATA-OTHER.READ"],
            ["CASEA", "OTHER", "X"],
            {"CASEA", "OTHER"},
        ),
    ],
)
def test_readable_studies(mint: Mint, scopes, studies, readable):
    assert readable_studies(mint(scopes), studies) == readable


@pytest.mark.parametrize("caller", list(CALLERS))
def test_readable_studies_agrees_with_the_decision(mint: Mint, caller: str):
    who = mint(CALLERS[caller])
    studies = [STUDY, STUDY.lower(), "OTHER"]
    readable = readable_studies(who, studies)
    for study in studies:
        allowed = readable is None or study in readable
        assert allowed is can(who, READ, study, "controlled"), study


# -- tokens -----------------------------------------------------------------------------------
def test_a_token_is_stored_hashed_and_the_secret_is_nowhere_in_its_row(session: Session):
    token, secret = create_token(session, "alice", ["score.READ"], timedelta(days=1))
    session.commit()
    assert token.token_hash == hashlib.sha256(secret.encode()).hexdigest()
    row = session.execute(
        text("SELECT * FROM tokens WHERE token_id = :id"), {"id": token.token_id}
    ).one()
    assert secret not in " ".join(str(value) for value in row)
    assert len(secret) >= 40  # 32 random bytes, URL-safe


def test_each_token_is_a_new_secret(session: Session):
    secrets = {create_token(session, "a", ["score.READ"])[1] for _ in range(5)}
    assert len(secrets) == 5


def test_principal_for_resolves_user_and_scopes(session: Session):
    token, secret = create_token(session, "alice", ["score.read", "PROGRAMDATA-x.write"])
    session.flush()
    for header in (f"Bearer {secret}", f"bearer {secret}", f"  BEARER   {secret}  "):
        who = principal_for(session, header)
        assert who is not None and (who.user, who.token_id) == ("alice", token.token_id)
        assert can(who, READ, "x", "controlled") and can(who, WRITE, "x", "controlled")
        assert not can(who, WRITE, "X", "controlled")


@pytest.mark.parametrize("header", [None, ""])
def test_no_header_is_anonymous(session: Session, header):
    assert principal_for(session, header) is None


NOW = datetime.now(timezone.utc)  # collection time: only for instants in the past


@pytest.mark.parametrize(
    ("header", "fields", "message"),
    [
        ("Basic dXNlcjpwdw==", {}, "Authorization header must be 'Bearer <token>'"),
        ("Bearer", {}, "Authorization header must be 'Bearer <token>'"),
        ("Bearer    ", {}, "Authorization header must be 'Bearer <token>'"),
        ("Token {secret}", {}, "Authorization header must be 'Bearer <token>'"),
        ("Bearer not-a-token", {}, "Invalid access token"),
        ("Bearer {secret}x", {}, "Invalid access token"),
        ("Bearer {hash}", {}, "Invalid access token"),  # the stored hash is no password
        ("Bearer {secret}", {"revoked_at": NOW}, "Access token has been revoked"),
        (
            "Bearer {secret}",
            {"revoked_at": NOW, "expires_at": NOW - timedelta(days=1)},
            "Access token has been revoked",
        ),
        ("Bearer {secret}", {"expires_at": NOW - timedelta(seconds=1)}, "Access token has expired"),
        # SQLite hands back naive datetimes: they are UTC
        (
            "Bearer {secret}",
            {"expires_at": (NOW - timedelta(minutes=1)).replace(tzinfo=None)},
            "Access token has expired",
        ),
    ],
)
def test_bad_revoked_and_expired_tokens_are_401(session: Session, header, fields, message):
    token, secret = create_token(session, "alice", ["score.ADMIN"])
    for name, value in fields.items():
        setattr(token, name, value)
    session.commit()
    header = header.format(secret=secret, hash=token.token_hash)
    error = refusal(lambda: principal_for(session, header))
    assert (error.status, error.error_id, error.message) == (401, "unauthorized.token", message)


def test_a_token_not_yet_expired_is_accepted(mint: Mint):
    who = mint(["score.READ"], expires_at=datetime.now(timezone.utc) + timedelta(minutes=5))
    assert who is not None and can(who, READ, STUDY, "controlled")


def test_expired_at():
    token = Token(expires_at=None)
    assert not expired_at(token)
    token.expires_at = datetime(2030, 1, 1)  # naive: UTC
    assert not expired_at(token, now=datetime(2029, 12, 31, 23, 59, tzinfo=timezone.utc))
    assert expired_at(token, now=datetime(2030, 1, 1, tzinfo=timezone.utc))


# -- scopes and durations ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "scope",
    [
        "score.READ",
        "score.WRITE",
        "score.ADMIN",
        "SCORE.read",
        "PROGRAMDATA-CASEA.READ",
        "PROGRAMDATA-casea.write",
        "PROGRAMDATA-A.b_c-9.READ",
    ],
)
def test_valid_scopes(scope: str):
    assert validate_scopes([scope]) == [scope]


@pytest.mark.parametrize(
    "scope",
    [
        "",
        "score",
        "score.DELETE",
        "score.READ.extra",
        "PROGRAMDATA-.READ",
        "PROGRAMDATA-CASEA",
        "PROGRAMDATA-CASEA.ADMIN",
        "PROGRAMDATA-CA SEA.READ",
        "PROGRAMDATA-CASEA/..READ",
        "collab.READ",
        " score.READ",
    ],
)
def test_unknown_scopes_are_refused_by_name(session: Session, scope: str):
    with pytest.raises(ValueError, match=f"unknown scope {scope!r}"):
        validate_scopes(["score.READ", scope])
    with pytest.raises(ValueError, match="unknown scope"):
        create_token(session, "alice", [scope])


def test_a_scope_with_a_trailing_newline_is_refused():
    with pytest.raises(ValueError):
        validate_scopes(["score.READ\n"])


@pytest.mark.parametrize(
    ("study", "action", "scope"),
    [
        ("CASEA", READ, "PROGRAMDATA-CASEA.READ"),
        ("casea", WRITE, "PROGRAMDATA-casea.WRITE"),
        ("A.B", READ, "PROGRAMDATA-A.B.READ"),
    ],
)
def test_study_scope(study, action, scope):
    assert study_scope(study, action) == scope


@pytest.mark.parametrize(
    ("text_", "delta"),
    [
        ("30d", timedelta(days=30)),
        ("12h", timedelta(hours=12)),
        ("45m", timedelta(minutes=45)),
        ("90s", timedelta(seconds=90)),
        (" 7 d ", timedelta(days=7)),
        ("0s", timedelta(0)),
    ],
)
def test_parse_duration(text_: str, delta: timedelta):
    assert parse_duration(text_) == delta


@pytest.mark.parametrize("text_", ["", "30", "d", "30w", "-1d", "1.5h", "30dd", "30D", "1d2h"])
def test_bad_durations_are_refused_by_name(text_: str):
    with pytest.raises(ValueError, match=f"bad duration {text_!r}"):
        parse_duration(text_)
