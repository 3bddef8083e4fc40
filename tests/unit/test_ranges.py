"""The byte-range bookkeeping that resume depends on."""

from __future__ import annotations

import random

from pyscore.client.ranges import Journal, Ranges


def test_ranges_merge_and_gaps_match_a_bitmap():
    rng = random.Random(3)
    for _ in range(200):
        size = rng.randint(1, 300)
        bitmap = [False] * size
        r = Ranges()
        for _ in range(rng.randint(0, 12)):
            a = rng.randrange(size)
            b = rng.randint(a, size)
            r.add(a, b)
            for i in range(a, b):
                bitmap[i] = True
        assert r.total() == sum(bitmap)
        gaps = r.missing(0, size)
        assert sum(b - a for a, b in gaps) == size - sum(bitmap)
        for a, b in gaps:
            assert not any(bitmap[a:b])
        spans = r.spans()
        assert all(spans[i][1] < spans[i + 1][0] for i in range(len(spans) - 1))
        pos = rng.randrange(size)
        expected = pos
        while expected < size and bitmap[expected]:
            expected += 1
        assert r.end_of_run(pos) == expected


def test_journal_round_trip_and_torn_last_line(tmp_path):
    path = tmp_path / "x.journal"
    j = Journal(path, {"objectId": "a", "size": 100})
    j.open(Ranges([(0, 10)]))
    j.append([(20, 30), (40, 50)])
    j.close()
    with open(path, "a") as f:
        f.write("60 7")  # killed mid-write
    assert Journal(path, {"objectId": "a", "size": 100}).load().spans() == [
        (0, 10),
        (20, 30),
        (40, 50),
    ]
    assert Journal(path, {"objectId": "a", "size": 101}).load().spans() == []
