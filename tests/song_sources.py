"""Files of SONG's own repository, for tests that check pyscore against what SONG's authors
wrote (its Flyway SQL, its test documents). SONG's files are not part of pyscore (another
licence), so they are read from a git copy of overture-stack/SONG named by PYSCORE_SONG_GIT
(its .git directory, or a bare clone) at PYSCORE_SONG_REV (default: the commit the reference
facts were read at); tests that need them skip without it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any

import pytest

REV = os.environ.get("PYSCORE_SONG_REV", "434ddf2e")
MIGRATIONS = "song-server/src/main/resources/db/migration"
DOCUMENTS = "song-server/src/test/resources/documents"


def song_git() -> str:
    """The git directory of SONG's sources, or skip the test."""
    where = os.environ.get("PYSCORE_SONG_GIT", "")
    if not where or not shutil.which("git"):
        pytest.skip("PYSCORE_SONG_GIT (a git copy of overture-stack/SONG) is not set")
    return where


def song_text(path: str) -> str:
    """One file of SONG's repository at REV."""
    done = subprocess.run(
        ["git", "--git-dir", song_git(), "show", f"{REV}:{path}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode:
        pytest.skip(f"{path} at {REV} is not in {song_git()}: {done.stderr.strip()}")
    return done.stdout


def song_json(path: str) -> Any:
    return json.loads(song_text(path))


def song_names(folder: str) -> list[str]:
    """The file names in one folder of SONG's repository at REV."""
    done = subprocess.run(
        ["git", "--git-dir", song_git(), "ls-tree", "--name-only", f"{REV}:{folder}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode:
        pytest.skip(f"{folder} at {REV} is not in {song_git()}")
    return done.stdout.split()
