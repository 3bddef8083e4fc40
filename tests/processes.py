"""Processes seen through /proc: whether one still runs, and which it started, for the tests
and benches that kill servers and check that none of their workers is left."""

from __future__ import annotations

from pathlib import Path


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # the command may hold spaces and parentheses: fields follow the last ')'
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def parents() -> dict[int, list[int]]:
    """Each process's children, by parent pid."""
    found: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            found.setdefault(ppid, []).append(int(entry.name))
    return found


def children(pid: int) -> list[int]:
    """Processes whose parent is `pid`."""
    return parents().get(pid, [])


def descendants(pid: int) -> list[int]:
    """Every process below `pid`."""
    tree, found, todo = parents(), [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found
