"""What the client's modules may import: the byte path (httpio, transfer, ranges, retry, tls,
safefiles, digest) never httpx nor the JSON API module, and no client module the server."""

from __future__ import annotations

import subprocess
import sys

import pytest

BYTE_PATH = ["httpio", "transfer", "ranges", "retry", "tls", "safefiles", "digest"]
CLIENT = [
    "api",
    "blockcache",
    "cli",
    "config",
    "download",
    "layout",
    "lookup",
    "mount",
    "progress",
    "submit",
    "upload",
    "view",
    *BYTE_PATH,
]


def loaded_after(module: str) -> set[str]:
    """The modules a fresh interpreter holds after importing `module`."""
    code = f"import sys, {module}; print('\\n'.join(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(done.stdout.split())


@pytest.mark.parametrize("name", BYTE_PATH)
def test_the_byte_path_loads_neither_httpx_nor_the_api_module(name):
    loaded = loaded_after(f"pyscore.client.{name}")
    assert "httpx" not in loaded
    assert "pyscore.client.api" not in loaded


@pytest.mark.parametrize("name", CLIENT)
def test_the_client_never_loads_the_server(name):
    loaded = loaded_after(f"pyscore.client.{name}")
    assert not [m for m in loaded if m.startswith("pyscore.server")]
