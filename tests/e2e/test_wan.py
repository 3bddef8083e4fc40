"""A platform behind the emulated long link (tests/wan_fixtures.py): metadata, storage and
signed data URLs all cross it, and it counts what score-client does over it."""

from __future__ import annotations

from tests.conftest import local_store_only
from tests.publish import file_md5, publish, random_file
from tests.wan_fixtures import wan_server  # noqa: F401

KiB = 1024


@local_store_only
def test_everything_crosses_the_link(wan_server, tmp_path):  # noqa: F811
    server = wan_server(rtt_ms=40)
    link = server.link
    files = tmp_path / "files"
    files.mkdir()
    ids = []
    for i in range(2):
        bam = random_file(files / f"s{i}.bam", 300 * KiB, seed=i + 1)
        bai = random_file(files / f"s{i}.bam.bai", 2 * KiB, seed=i + 10)
        ids.append(publish(server.data_dir, [bam, bai], study="WAN", access="open")[0])
    url = server.client("url", "--object-id", ids[0])
    assert url.returncode == 0, url.stderr
    assert url.stdout.strip().startswith(link.url + "/"), url.stdout
    link.reset()
    out = tmp_path / "out"
    result = server.client("download", "--object-id", *ids, "--output-dir", str(out))
    assert result.returncode == 0, result.stderr
    for name in ("s0.bam", "s0.bam.bai", "s1.bam", "s1.bam.bai"):
        assert file_md5(out / name) == file_md5(files / name)
    s = link.stats()
    data = [r for r in s.log if r.path.startswith("/store/objects/")]
    assert len(data) >= 4  # every file's bytes came over the link
    assert {r.method for r in data} == {"GET"}
    assert s.bytes_down >= 2 * (300 + 2) * KiB
    assert any(r.path.startswith("/entities/") for r in s.log)
    assert any(r.path.startswith("/download/") for r in s.log)
    assert s.requests == s.responses == len(s.log)
    assert s.connections >= 1 and s.unparsed == 0
    assert all(r.status is not None and r.status < 400 for r in s.log), s.lines()
    for r in s.log:
        print(f"{r.connection:3} {r.sent:7.3f} {r.done:7.3f} {r.method} {r.path[:60]} {r.range}")
    print(s.connections, s.peak_in_flight)
