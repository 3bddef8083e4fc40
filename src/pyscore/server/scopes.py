"""Scope names and the rule of which scope allows what: the bottom of authorization.

Everything that speaks of scopes imports this module and it imports none of them: `auth`
(tokens and the access decision), `identity` (other issuers' claims turned into our names),
`tokencache` (verified callers, believed a few seconds). `audit` needs none of it.

Scope names are the originals': Score's `score.READ`/`score.WRITE` for every study, the
study's `PROGRAMDATA-<study>.READ`/`.WRITE` (Score's and Song's study scopes), Song's
system scopes `song.READ`/`song.WRITE`, and pyscore's `score.ADMIN`, which implies all.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

READ_ALL = "score.READ"
WRITE_ALL = "score.WRITE"
ADMIN = "score.ADMIN"
SONG_READ = "song.READ"
SONG_WRITE = "song.WRITE"  # Song's system scope (`auth.server.scope.system`)
STUDY_PREFIX = "PROGRAMDATA-"
# ASCII only: with Unicode case folding, `ſcore.ADMIN` (U+017F) and `score.admın` (U+0131)
# would match, and str.upper() turns both into SCORE.ADMIN
SCOPE_RE = re.compile(
    r"(score\.(READ|WRITE|ADMIN)|song\.(READ|WRITE)|PROGRAMDATA-[A-Za-z0-9_.\-]+\.(READ|WRITE))",
    re.IGNORECASE | re.ASCII,
)
KNOWN = (
    "score.READ, score.WRITE, score.ADMIN, song.READ, song.WRITE, "
    "PROGRAMDATA-<study>.READ or PROGRAMDATA-<study>.WRITE"
)


class Action(Enum):
    """What a caller asks to do. READ and WRITE are Score's (a study's bytes); METADATA is a
    write of a study's metadata (Song's `@studySecurity`: submit, publish, curate, create the
    study); SYSTEM is Song's `@systemSecurity` (register analysis types); ADMIN is ours."""

    READ = "READ"
    WRITE = "WRITE"
    METADATA = "METADATA"
    SYSTEM = "SYSTEM"
    ADMIN = "ADMIN"


@dataclass(frozen=True)
class Principal:
    token_id: str  # our token's id, or the subject an identity provider vouches for
    user: str
    scopes: frozenset[str]  # as `normal_scope` writes them
    issuer: str = ""  # "" for this server's own tokens


def is_scope(name: str) -> bool:
    """Whether `name` is one of our scopes, all of it (ASCII; words in any case)."""
    return SCOPE_RE.fullmatch(name) is not None


def normal_scope(scope: str) -> str:
    """A scope in the one spelling decisions compare: the original matches the words of a
    scope (`score`, `PROGRAMDATA-`, `READ`...) ignoring case, but a study id is exact, so
    `PROGRAMDATA-casea.READ` never reads study `CASEA`."""
    upper = scope.upper()
    if upper.startswith(STUDY_PREFIX) and "." in scope:
        study, _, action = scope[len(STUDY_PREFIX) :].rpartition(".")
        return f"{STUDY_PREFIX}{study}.{action.upper()}"
    return upper


def normal_scopes(names: Iterable[str]) -> frozenset[str]:
    """The scopes among `names`, as `normal_scope` writes them (anything else is dropped: a
    token stored before scope words were ASCII-only grants nothing by a look-alike)."""
    return frozenset(normal_scope(s) for s in names if is_scope(s))


def study_scope(study_id: str, action: Action) -> str:
    word = "READ" if action is Action.READ else "WRITE"
    return f"{STUDY_PREFIX}{study_id}.{word}"


def validate_scopes(scopes: list[str]) -> list[str]:
    bad = [s for s in scopes if not is_scope(s)]
    if bad:
        raise ValueError(f"unknown scope {bad[0]!r}; expected {KNOWN}")
    return scopes


# Per action, the system scopes that allow it on every study (normal spelling), and the one
# a refusal names when no study is concerned. A study's own scope also allows READ, WRITE
# and METADATA on that study; ADMIN allows everything.
SYSTEM_SCOPES: dict[Action, tuple[str, ...]] = {
    Action.READ: (READ_ALL,),
    Action.WRITE: (WRITE_ALL,),
    Action.METADATA: (SONG_WRITE, WRITE_ALL),
    Action.SYSTEM: (SONG_WRITE,),
    Action.ADMIN: (),
}


def missing(scopes: frozenset[str], action: Action, study_id: str | None) -> str | None:
    """None when a caller holding `scopes` may do `action` (on `study_id`, if any); else the
    scope a refusal names (the study's when there is a study)."""
    if ADMIN.upper() in scopes:
        return None
    if any(s.upper() in scopes for s in SYSTEM_SCOPES[action]):
        return None
    if action in (Action.SYSTEM, Action.ADMIN):
        return SONG_WRITE if action is Action.SYSTEM else ADMIN
    if study_id is not None:
        scope = study_scope(study_id, action)
        return None if scope in scopes else scope
    return SYSTEM_SCOPES[action][0]
