"""The block cache's memory is what it holds: reading a 128 MiB object sequentially and then
at random through a 16 MiB cache, the reading process grows by little more than the cache
(it grew by 276 MiB when every block was a `bytes` of its own), every byte right; what a
sequential reader has read past is given back at once."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from http.server import BaseHTTPRequestHandler

import pytest

from pyscore.client.blockcache import (
    BLOCK,
    FETCH_MAX,
    READAHEAD_MAX,
    READAHEAD_MIN,
    BlockStore,
    Readahead,
    RemoteObject,
)
from tests.loopback import Loopback

MiB = 1024 * 1024
SIZE = 128 * MiB


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    """A file and a loopback server answering ranges of it (the object store)."""
    path = tmp_path_factory.mktemp("blocks") / "object"
    rng = random.Random(1)
    with open(path, "wb") as f:
        for _ in range(SIZE // MiB):
            f.write(rng.randbytes(MiB))
    fd = os.open(path, os.O_RDONLY)

    def handle(h: BaseHTTPRequestHandler) -> None:
        first, last = h.headers["Range"].split("=")[1].split("-")
        lo, hi = int(first), min(int(last), SIZE - 1)
        h.send_response(206)
        h.send_header("Content-Range", f"bytes {lo}-{hi}/{SIZE}")
        h.send_header("Content-Length", str(hi - lo + 1))
        h.end_headers()
        pos = lo
        while pos <= hi:
            chunk = os.pread(fd, min(MiB, hi + 1 - pos), pos)
            h.wfile.write(chunk)
            pos += len(chunk)

    server = Loopback(handle)
    yield server.url + "/object", path
    server.close()
    os.close(fd)


READER = """
import os, random, sys
from pyscore.client.blockcache import BlockStore, Readahead, RemoteObject

url, path, cache = sys.argv[1], sys.argv[2], int(sys.argv[3])
fd = os.open(path, os.O_RDONLY)
size = os.fstat(fd).st_size

def peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

store = BlockStore(lambda object_id: url, memory_limit=cache, parallel=8)
obj = RemoteObject("o", size)
before, ahead, pos = peak(), Readahead(), 0
while pos < size:
    n = 128 * 1024
    assert store.read(obj, pos, n, ahead.advise(pos, n)) == os.pread(fd, n, pos)
    pos += n
rng = random.Random(2)
for _ in range(2000):
    at = rng.randrange(size - 65536)
    assert store.read(obj, at, 65536) == os.pread(fd, 65536, at)
print(peak() - before)
"""


def test_the_reader_grows_by_about_the_cache_and_no_more(served):
    url, path = served
    cache = 16 * MiB
    done = subprocess.run(
        [sys.executable, "-c", READER, url, str(path), str(cache)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    grown = int(done.stdout.split()[-1])
    assert grown < 2 * cache + 8 * MiB, f"grew by {grown / MiB:.0f} MiB"


def test_what_a_sequential_reader_read_past_is_given_back(served):
    url, path = served
    store = BlockStore(lambda object_id: url, memory_limit=64 * MiB, parallel=4)
    obj = RemoteObject("o", SIZE)
    ahead, pos = Readahead(), 0
    with open(path, "rb") as f:
        while pos < 48 * MiB:
            n = 128 * 1024
            assert store.read(obj, pos, n, ahead.advise(pos, n)) == f.read(n)
            pos += n
    # from the point the reader proved sequential (1 MiB in a row), the kernel's cache has them
    # (but the last two blocks: the kernel's reads of them may still be out)
    held = [i for i in range(pos // BLOCK - 2) if (obj.object_id, i) in store.memory]
    assert max(held, default=0) * BLOCK < READAHEAD_MIN
    assert store.memory.used <= READAHEAD_MIN + READAHEAD_MAX + FETCH_MAX
    store.close()
