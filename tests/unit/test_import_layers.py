"""Dependencies point one way: the byte path (httpio, transfer, ranges, retry, tls, safefiles,
digest) never loads httpx nor the JSON API module; no client module loads the server; the
server loads neither the client nor httpx; the wire package loads neither side; domain modules
of the server load no web framework. And a start-up budget: what score-client may have loaded
when its first request leaves, and what `version` loads at all (no timings: module lists)."""

from __future__ import annotations

import functools
import os
import subprocess
import sys

import pytest

BYTE_PATH = ["http1", "httpio", "transfer", "ranges", "retry", "tls", "safefiles", "digest"]
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


@functools.cache
def interpreter_own() -> frozenset[str]:
    """What this interpreter loads for `pathlib` alone (Python 3.9's pathlib loads
    urllib.parse, 3.13's does not): not ours to avoid."""
    return frozenset(loaded_after("pathlib"))


def top(loaded: set[str], names: tuple[str, ...]) -> list[str]:
    """The loaded modules, beyond the interpreter's own, that are or are inside `names`."""
    ours = loaded - interpreter_own()
    return sorted(m for m in ours if m in names or m.startswith(tuple(n + "." for n in names)))


@pytest.mark.parametrize("name", BYTE_PATH)
def test_the_byte_path_loads_neither_httpx_nor_the_api_module(name):
    loaded = loaded_after(f"pyscore.client.{name}")
    assert "httpx" not in loaded
    assert "pyscore.client.api" not in loaded
    # http.client parses headers with the email package; the byte path has its own HTTP/1.1
    assert not top(loaded, ("http", "email", "urllib"))


@pytest.mark.parametrize("name", CLIENT)
def test_the_client_never_loads_the_server_nor_httpx(name):
    loaded = loaded_after(f"pyscore.client.{name}")
    assert not [m for m in loaded if m.startswith("pyscore.server")]
    assert not top(loaded, ("httpx", "http.client", "email", "urllib.request"))


# What score-client has loaded when its first request leaves (download and view begin it in
# a thread, then import the rest while it is out): none of these. A test double stands in
# for the first request (the moment the command starts it) and lists sys.modules.
NOT_BEFORE_FIRST_REQUEST = (
    "httpx",
    "http",
    "email",
    "urllib",
    "pydantic",
    "msgspec",
    "pysam",
    "ssl",  # loaded for an https:// URL only
    "typing",
    "dataclasses",
    "shutil",
    "tempfile",
    "concurrent",
    "uuid",
    "pyscore.wire",
    "pyscore.server",
    "pyscore.library",
    "pyscore.client.download",
    "pyscore.client.lookup",
    "pyscore.client.transfer",
    "pyscore.client.progress",
    "pyscore.client.view",
    "pyscore.client.digest",
)
FIRST_REQUEST = """
import os, sys
from pyscore.client import cli, http1

def first_request(*args, **kwargs):
    print("\\n".join(sorted(m for m, v in sys.modules.items() if v)), flush=True)
    os._exit(0)

cli.started = first_request  # download, view: the connection check, begun in a thread
http1.Connection.request = first_request  # url, manifest: in the main thread
sys.exit(cli.main(sys.argv[1:]))
"""
OBJECT = "2c1d5f1e-3a4b-4c5d-8e6f-7a8b9c0d1e2f"


@pytest.mark.parametrize(
    "command",
    [
        ["download", "--object-id", OBJECT, "--output-dir", "{out}"],
        ["view", "--object-id", OBJECT, "--query", "chr1:1-100"],
        ["url", "--object-id", OBJECT],
        ["manifest", "--manifest", "http://127.0.0.1:9/manifest.tsv"],
    ],
    ids=lambda c: c[0],
)
def test_score_client_loads_little_before_its_first_request(command, tmp_path):
    argv = [a.replace("{out}", str(tmp_path / "out")) for a in command]
    env = {
        **os.environ,
        "METADATA_URL": "http://127.0.0.1:9",
        "STORAGE_URL": "http://127.0.0.1:9",
        "SCORE_CLIENT_CONF_DIR": str(tmp_path / "no-conf"),
    }
    done = subprocess.run(
        [sys.executable, "-c", FIRST_REQUEST, *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    loaded = set(done.stdout.split())
    assert "pyscore.client.cli" in loaded, done.stderr  # it did reach its first request
    assert not top(loaded, NOT_BEFORE_FIRST_REQUEST)


def test_score_client_version_loads_no_http_client_nor_the_wire_models():
    code = "import sys; from pyscore.client.cli import main; main(['version']); " + (
        "print('\\n'.join(sorted(m for m, v in sys.modules.items() if v)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    loaded = set(done.stdout.split())
    assert "pyscore.client.cli" in loaded, done.stderr
    assert not top(loaded, (*NOT_BEFORE_FIRST_REQUEST, "socket", "pyscore.client.api"))


SERVER_ENTRIES = ["pyscore.server.app", "pyscore.server.cli"]
# Server modules that hold logic, not HTTP: plain exceptions, no FastAPI or Starlette.
SERVER_DOMAIN = [
    "pyscore.server.auth",
    "pyscore.server.errors",
    "pyscore.server.objects",
    "pyscore.server.metadata",
    "pyscore.server.repository",
    "pyscore.server.viewer",
    "pyscore.server.keys",
    "pyscore.server.platform",
    "pyscore.server.audit",
    "pyscore.server.identity",
    "pyscore.server.events",
    "pyscore.server.events.delivery",
    "pyscore.server.htsget.tickets",
    "pyscore.server.formats.indexes",
    "pyscore.server.formats.headers",
    "pyscore.server.store.local",
    "pyscore.server.store.s3",
]


@pytest.mark.parametrize("name", SERVER_ENTRIES)
def test_the_server_never_loads_the_client_nor_httpx(name):
    loaded = loaded_after(name)
    assert not [m for m in loaded if m.startswith("pyscore.client")]
    assert "httpx" not in loaded


@pytest.mark.parametrize("name", SERVER_DOMAIN)
def test_server_logic_loads_no_web_framework(name):
    loaded = loaded_after(name)
    assert not [m for m in loaded if m.split(".")[0] in ("fastapi", "starlette")]


def test_the_wire_package_loads_neither_side():
    loaded = loaded_after(
        "pyscore.wire.score, pyscore.wire.song, pyscore.wire.files, "
        "pyscore.wire.manifest, pyscore.wire.codec"
    )
    assert not [m for m in loaded if m.startswith(("pyscore.client", "pyscore.server"))]


# Authorization in one direction: each module may import only the ones listed (of this group);
# `scopes` is the bottom, `auth` the top, `audit` stands apart. Checked on the source, so a
# function-level (lazy) import breaks the order as much as one at the top.
AUTHORIZATION = ["scopes", "audit", "tokencache", "identity", "auth"]
MAY_IMPORT = {
    "scopes": set(),
    "audit": set(),
    "tokencache": {"scopes"},
    "identity": {"scopes", "tokencache"},
    "auth": {"scopes", "audit", "tokencache", "identity"},
}


def imported_groups(name: str) -> set[str]:
    """The modules of AUTHORIZATION that `pyscore.server.<name>` (every file of it, for a
    package) imports anywhere in its source."""
    import ast
    from pathlib import Path

    import pyscore.server

    root = Path(pyscore.server.__file__).parent
    files = sorted((root / name).glob("*.py")) if (root / name).is_dir() else [root / f"{name}.py"]
    found: set[str] = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for target in targets:
                parts = target.split(".")
                if parts[:2] == ["pyscore", "server"] and len(parts) > 2:
                    found.add(parts[2])
    return (found & set(AUTHORIZATION)) - {name}


@pytest.mark.parametrize("name", AUTHORIZATION)
def test_authorization_modules_import_one_way(name):
    assert imported_groups(name) <= MAY_IMPORT[name], (
        f"pyscore.server.{name} imports {sorted(imported_groups(name) - MAY_IMPORT[name])}"
    )


def test_the_audit_trail_loads_no_authorization():
    loaded = loaded_after("pyscore.server.audit")
    assert not {f"pyscore.server.{m}" for m in AUTHORIZATION if m != "audit"} & loaded


HEAVY = ("httpx", "pysam", "pandas", "fsspec", "numpy", "msgspec", "rich")


def test_import_pyscore_loads_no_http_client_nor_data_library_nor_the_server():
    """`import pyscore` is a notebook's first line: what it loads, every start pays for."""
    loaded = loaded_after("pyscore")
    assert not [m for m in loaded if m.split(".")[0] in HEAVY]
    assert not [m for m in loaded if m.startswith(("pyscore.server", "pyscore.client"))]


def test_a_client_loads_its_http_client_only_when_it_calls():
    code = (
        "import sys, pyscore; pyscore.Client(metadata_url='http://127.0.0.1:9', "
        "storage_url='http://127.0.0.1:9'); pyscore.ScoreError; pyscore.FileInfo; "
        "print('\\n'.join(sorted(m for m, v in sys.modules.items() if v)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(done.stdout.split())
    assert "pyscore.library.client" in loaded
    assert not [m for m in loaded if m.split(".")[0] in HEAVY]
    assert not [m for m in loaded if m.startswith("pyscore.server")]


@pytest.mark.parametrize("name", ["pyscore.library.client", "pyscore.library.fs"])
def test_the_library_never_loads_the_server(name):
    loaded = loaded_after(name)
    assert not [m for m in loaded if m.startswith("pyscore.server")]
