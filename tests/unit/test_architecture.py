"""docs/ARCHITECTURE.md is the design of record: its package map matches the tree."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "pyscore"


def named_in_the_map() -> set[Path]:
    """Paths (relative to src/pyscore) the package map names: `x/` directories, `x.py` files."""
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    block = text.split("## Package map", 1)[1].split("```", 2)[1]
    named: set[Path] = set()
    parent = Path()
    for line in block.splitlines()[2:]:  # after "```" and "pyscore/"
        match = re.match(r"^( +)([\w.]+/?(?:, [\w.]+/?)*)(?:\s|$)", line)
        if not match or len(match[1]) not in (2, 4):
            continue  # a continuation of the description above
        for name in match[2].split(", "):
            path = Path(name.rstrip("/")) if len(match[1]) == 2 else parent / name.rstrip("/")
            named.add(path)
            if len(match[1]) == 2:
                parent = path
    return named


def test_everything_the_map_names_exists():
    missing = [str(p) for p in named_in_the_map() if not (SRC / p).exists()]
    assert not missing, f"docs/ARCHITECTURE.md names what src/pyscore lacks: {missing}"


def test_every_package_in_the_tree_is_in_the_map():
    packages = {p.parent.relative_to(SRC) for p in SRC.rglob("__init__.py") if p.parent != SRC}
    unnamed = sorted(str(p) for p in packages - named_in_the_map())
    assert not unnamed, f"packages missing from docs/ARCHITECTURE.md: {unnamed}"
