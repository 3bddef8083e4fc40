"""The mount's tree from entities and listing rows: what is shown, what is left out and why,
whatever order the rows come in."""

from __future__ import annotations

import itertools

from pyscore.client.mount import Listed, Named, NamedListed, build_tree, joined

A, B = "analysis-a", "analysis-b"
ROWS = [
    Named("id-3", A, "x.bam", "S", "open"),
    Named("id-1", A, "x.bam", "S", "open"),  # the same name: the smaller id is shown
    Named("id-2", A, "x.bam.bai", "S", "open"),
    Named("id-4", B, "../up", "S", "open"),  # unsafe: left out, its folder stays
    Named("id-5", B, "y.vcf", "S", "controlled"),  # not in the listing: left out
]
LISTING = {
    i: Listed(i, size, ms)
    for i, size, ms in [
        ("id-1", 10, 5000),
        ("id-2", 2, 9000),
        ("id-3", 30, 1000),
        ("id-4", 4, 7000),
    ]
}


def test_every_order_of_the_rows_gives_the_same_tree():
    for order in itertools.permutations(ROWS):
        tree = build_tree(joined(order, LISTING), "bundle")
        assert sorted(tree.root.children) == [A, B]
        a = tree.root.children[A]
        assert {n: (c.size, c.mtime, c.object_id) for n, c in a.children.items()} == {
            "x.bam": (10, 5.0, "id-1"),
            "x.bam.bai": (2, 9.0, "id-2"),
        }
        assert a.mtime == 9.0 and a.is_dir and not a.children["x.bam"].is_dir
        assert tree.root.children[B].children == {}
        assert (tree.files, tree.bytes) == (2, 12)  # what statfs says (df): the shown ones
        assert sorted(tree.hidden) == [
            "'../up' (id-4): unsafe name",
            "x.bam (id-3): duplicate name",
            "y.vcf (id-5)",
        ]
        assert tree.lookup(f"/{A}/x.bam/more") is None and tree.lookup("/") is tree.root


def test_object_id_layout_names_files_by_id():
    tree = build_tree(joined(ROWS, LISTING), "object-id")
    assert {n: c.size for n, c in tree.root.children.items()} == {
        "id-1": 10,
        "id-2": 2,
        "id-3": 30,
        "id-4": 4,
    }


def test_a_platform_the_token_cannot_read_is_counted_not_listed():
    """A one-study token on a million-file platform: the first HIDDEN_NAMED files left out
    are named (one warning each), the rest counted for one line, not held as strings."""
    from pyscore.client.mount import HIDDEN_NAMED

    others = [Named(f"other-{n:04}", B, f"f{n}.bam", "T", "controlled") for n in range(250)]
    tree = build_tree(joined([*ROWS, *others], LISTING), "bundle")
    assert tree.files == 2
    assert len(tree.hidden) == HIDDEN_NAMED
    assert tree.left_out == 250 + 3
    assert tree.more_hidden == tree.left_out - HIDDEN_NAMED


def test_a_listing_with_names_is_the_tree_alone():
    """pyscore's /listing?names=true rows name their files: each row is both halves."""
    rows = [
        NamedListed(e.id, LISTING[e.id].size, LISTING[e.id].lastModified, e.gnosId, e.fileName)
        for e in ROWS
        if e.id in LISTING
    ]
    tree = build_tree(((r, r) for r in rows), "bundle")
    assert {n: c.size for n, c in tree.root.children[A].children.items()} == {
        "x.bam": 10,
        "x.bam.bai": 2,
    }
    assert (tree.files, tree.bytes) == (2, 12)
    assert sorted(tree.hidden) == ["'../up' (id-4): unsafe name", "x.bam (id-3): duplicate name"]
