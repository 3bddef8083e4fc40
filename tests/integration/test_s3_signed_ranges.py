"""Download part URLs that sign their Range, as the original score-server makes them, on a real
S3 server (CI's Ceph RGW pass): the store itself proves the range is bound, and score-client
downloads through such URLs, fresh and after kill -9 in the middle of a part.

A fault proxy sits between everyone and the S3 server (the platform's S3 endpoint is the
proxy), so the data can be slowed down enough to kill the client mid-part; it passes the Host
header through, so signatures made for the proxy's address hold at the store."""

from __future__ import annotations

import os
import signal
import subprocess
from urllib.parse import urlsplit

import httpx
import pytest

from tests.api import bearer
from tests.conftest import CLIENT, init_server
from tests.faultproxy import FaultProxy
from tests.mounts import wait_until
from tests.publish import MiB, file_md5, publish, random_file

needs_s3 = pytest.mark.skipif(
    not os.environ.get("PYSCORE_TEST_S3"), reason="needs PYSCORE_TEST_S3 (CI's Ceph RGW pass)"
)
PART = 8 * MiB


@pytest.fixture
def platform(tmp_path):
    endpoint = os.environ["PYSCORE_TEST_S3"].split(",")[0]
    proxy = FaultProxy(urlsplit(endpoint).port or 80, data_path="/pyscore-")
    server = init_server(
        tmp_path / "data",
        "--s3-endpoint",  # the last --s3-endpoint wins: the proxy in front of the S3 server
        proxy.url,
        "--s3-sign-part-range",
        "--part-size",
        str(PART // MiB),
    )
    source = random_file(tmp_path / "big.bam", 2 * PART + 4 * MiB + 5)
    (object_id,) = publish(server.data_dir, [source])
    with server:
        server.proxy, server.source, server.object_id = proxy, source, object_id
        server.reader = server.token("PROGRAMDATA-BIG.READ")
        yield server
    proxy.close()


def download(platform, out, output=subprocess.PIPE) -> subprocess.Popen:
    env = {**os.environ, **platform.client_env(platform.reader), "TRANSPORT_PARALLEL": "2"}
    args = [CLIENT, "download", "--object-id", platform.object_id, "--output-dir", str(out)]
    return subprocess.Popen(args, env=env, text=True, stdout=output, stderr=output)


@needs_s3
def test_the_store_serves_a_part_url_only_for_its_own_range(platform):
    spec = httpx.get(
        f"{platform.url}/download/{platform.object_id}",
        params={"offset": 0, "length": -1},
        headers=bearer(platform.reader),
        timeout=30,
    ).json()
    assert len(spec["parts"]) == 3
    assert all("X-Amz-SignedHeaders=host%3Brange" in p["url"] for p in spec["parts"])
    part = spec["parts"][1]
    url, first, last = part["url"], part["offset"], part["offset"] + part["partSize"] - 1
    exact = httpx.get(url, headers={"Range": f"bytes={first}-{last}"}, timeout=60)
    assert exact.status_code == 206
    with open(platform.source, "rb") as f:
        f.seek(first)
        assert exact.content == f.read(part["partSize"])
    for other in (f"bytes={first + MiB}-{last}", f"bytes={first}-{last - 1}", None):
        headers = {"Range": other} if other else {}
        refused = httpx.get(url, headers=headers, timeout=60)
        assert refused.status_code == 403, (other, refused.status_code)


@needs_s3
def test_download_fresh_and_after_kill_9_mid_part(platform, tmp_path):
    size = platform.source.stat().st_size
    fresh = download(platform, tmp_path / "fresh")
    _, err = fresh.communicate(timeout=120)
    assert fresh.returncode == 0, err
    assert file_md5(tmp_path / "fresh/big.bam") == file_md5(platform.source)

    proxy = platform.proxy
    parts = {f"bytes={o}-{min(o + PART, size) - 1}" for o in range(0, size, PART)}
    assert set(proxy.stats.ranges) == parts, proxy.stats.ranges
    seen, base = len(proxy.stats.statuses), proxy.stats.data_bytes
    proxy.faults.rate = 2 * MiB  # per response
    out = tmp_path / "resumed"
    client = download(platform, out, subprocess.DEVNULL)
    try:  # both first parts well past the client's first 4 MiB write, and synced
        assert wait_until(lambda: proxy.stats.data_bytes - base >= 11 * MiB, 60)
    finally:
        os.kill(client.pid, signal.SIGKILL)
        client.wait(10)
    assert proxy.stats.data_bytes - base < 2 * PART, "killed after the parts were done"
    assert not (out / "big.bam").exists()
    proxy.faults.rate = 0
    rerun = download(platform, out)
    _, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    assert file_md5(out / "big.bam") == file_md5(platform.source)
    assert 403 not in proxy.stats.statuses[seen:], "a GET with another range was sent"
    assert set(proxy.stats.ranges) == parts
