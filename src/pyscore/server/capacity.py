"""What a process needs so an admitted request never waits: threads and database
connections, sized from `max_concurrent_requests` (web/limits.py says why)."""

from __future__ import annotations

HEADROOM = 8  # threads and connections beyond the admitted requests (startup, teardown)


def thread_tokens(limit: int) -> int:
    """Threads the pool needs so an admitted request never waits for one."""
    return max(40, limit + HEADROOM)


def pool_size(limit: int) -> int:
    """Database connections a process needs so an admitted request never waits for one."""
    return limit + HEADROOM
