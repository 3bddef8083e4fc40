"""requirements/lock.txt (what the image installs) pins every dependency pyproject.toml
names, for the server's extra too, so a dependency added without `bash scripts/lock.sh` is
found here rather than as an ImportError in a container."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the oldest Python's pass
    tomllib = None

ROOT = Path(__file__).resolve().parents[2]


def name(requirement: str) -> str:
    return re.split(r"[\s;<>=!~\[]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def pinned(lock: Path) -> set[str]:
    return {name(line) for line in lock.read_text().splitlines() if re.match(r"[A-Za-z]", line)}


def test_the_lock_pins_every_dependency_of_pyproject() -> None:
    if tomllib is None:
        pytest.skip("tomllib is Python 3.11+; the newest Python's pass checks this")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {
        name(r) for r in [*project["dependencies"], *project["optional-dependencies"]["postgres"]]
    }
    assert wanted - pinned(ROOT / "requirements" / "lock.txt") == set(), "run: bash scripts/lock.sh"


def test_the_client_lock_pins_what_the_tarball_ships() -> None:
    wanted = {
        name(line)
        for line in (ROOT / "requirements" / "client.in").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert wanted - pinned(ROOT / "requirements" / "client-lock.txt") == set()
