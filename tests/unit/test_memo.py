"""The htsget server's memo of parsed indexes: hits skip the parse, and memory stays bounded
by the size of what was parsed, dropping the least recently used first."""

from __future__ import annotations

from pyscore.server.htsget.tickets import Memo


def test_hits_skip_the_parse_and_the_budget_evicts_least_recently_used():
    memo = Memo(budget=100)
    parses: list[str] = []

    def parse(name: str):
        return lambda: parses.append(name) or name.upper()

    assert memo.get(("a",), parse("a"), 40) == "A"
    assert memo.get(("b",), parse("b"), 40) == "B"
    assert memo.get(("a",), parse("a"), 40) == "A"  # a hit, and now the most recent
    assert memo.get(("c",), parse("c"), 40) == "C"  # 120 > 100: b, least recent, goes
    assert parses == ["a", "b", "c"]
    assert memo.get(("a",), parse("a"), 40) == "A"
    assert memo.get(("b",), parse("b"), 40) == "B"
    assert parses == ["a", "b", "c", "b"]
    assert memo.total <= 100


def test_an_entry_larger_than_the_budget_is_served_and_kept_alone():
    memo = Memo(budget=10)
    memo.get(("small",), lambda: 1, 5)
    assert memo.get(("huge",), lambda: 2, 50) == 2
    assert list(memo.items) == [("huge",)]
