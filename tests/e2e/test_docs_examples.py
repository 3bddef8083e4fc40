"""Every command the docs show runs: the `bash` blocks of docs/**/*.md and README.md, page by
page and in order, as a reader would type them, against a demo platform of this module's own;
and every `python` block, as cells of one notebook per page (one namespace, in this process,
with the reader's environment and directory).

A reader of the docs has followed Configure: METADATA_URL, STORAGE_URL and ACCESSTOKEN are
set (to this platform and a token with PROGRAMDATA-DEMO.READ and .WRITE). In each block
`http://127.0.0.1:8080` (and 8081, 8082) becomes a free port, `/srv/pyscore` a data directory,
`<your token>` the token, `<object id>` and its kin the demo files' ids (PLACEHOLDERS).
From a block that runs `score-server init` on, a page has a platform of its own (its own data
directory and ports); before it, and on other pages, the module's platform serves. A line
that is just `score-server serve ...` is started in the background, waited for, and stopped
at the end of its page. Blocks with a `title="name"` (an analysis payload, a properties file)
are written as that file for the blocks after them. Each page runs in a fresh directory,
which is also its HOME; exported variables carry over from block to block.

A block that cannot run here is named in NOT_RUN by its first line, with the reason; an entry
that names no block fails, so the list stays true.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from pyscore.wire.manifest import parse_download
from tests.conftest import BIN, Server, free_port, init_demo_server, need

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = [*sorted(DOCS.rglob("*.md")), ROOT / "README.md"]
NOT_RUN = {
    "bash scripts/demo.sh    # set up, start a local platform with generated data, download a "
    "manifest, slice a region": "sets up .venv and serves on port 8080 itself; "
    "tests/e2e/test_demo_script.py runs it (set-up skipped)",
    "python3 -m venv ~/.venvs/pyscore": "installs pyscore and its dependencies from the package "
    "registry (scripts/setup.sh does the same for every CI run)",
    "uv tool install --python 3.12 .              # uv fetches a managed Python": "fetches a "
    "Python build from outside the package registries",
    "score-server init --data-dir /srv/pyscore-prod \\": "needs a PostgreSQL server and an S3 "
    "store with credentials (CI's PostgreSQL + S3 pass initialises every platform that way)",
    "score-client upload --manifest manifest.txt": "the object ids come from a submission made "
    "with the Song SDK (tests/e2e/test_upload.py uploads by manifest and by object id)",
    "npm ci --prefix tests/oidc && node tests/oidc/provider.mjs 9000 9001 &   # issuer "
    "http://127.0.0.1:9000": "the OpenID provider flow, which tests/e2e/test_identity.py runs",
    "score-server cors apply --data-dir /srv/pyscore-prod": "needs an S3 store "
    "(tests/integration/test_cors.py applies it on CI's S3 server)",
    "score-server init --data-dir /srv/pyscore --database-url postgresql://pyscore@db/pyscore": (
        "needs a running SONG and Score's bucket (tests/integration/test_import_song.py and "
        "test_import_score.py run these commands on a SONG double and CI's PostgreSQL and S3)"
    ),
    "score-server import verify --data-dir /srv/pyscore --song-database "
    "postgresql://reader:secret@song-db/song": "needs a running SONG (test_import_song.py "
    "verifies an import)",
    "tar xvzf score-client-0.1.0-dist.tar.gz": "the tarball is built by scripts/dist.sh, "
    "whose libraries come from the package registry; tests/distribution/test_tarball.py runs "
    "these steps",
    "docker run -it pyscore                      # a shell in /score-client": "needs the "
    "image and a container engine; tests/distribution/test_image.py runs these commands with "
    "podman",
    "bash scripts/image.sh                         # podman; prints localhost/pyscore:<version>": (
        "builds the image (minutes; tests/distribution/test_image.py builds and runs it)"
    ),
    "docker volume create pyscore-data": "needs the image and a container engine; "
    "tests/distribution/test_image.py runs init and serve in containers",
    "kubectl create namespace pyscore": "needs a Kubernetes cluster; "
    "tests/distribution/test_kubernetes.py renders and validates the manifests",
    "kubectl -n pyscore delete job pyscore-migrate --ignore-not-found": "needs a Kubernetes "
    "cluster; tests/e2e/test_server_startup.py runs a replica waiting for the migration",
    "mkdir -m 755 deploy/secrets   # postgres_password, database_url, url_signing_pepper, "
    "s3_access_key, s3_secret_key, s3_config.json": "needs the images; "
    "tests/distribution/test_compose.py runs deploy/compose.yaml",
    "bash scripts/test.sh                                  # everything CI runs (see below)": (
        "CI itself"
    ),
    "snakemake --cores 1 --storage-score-metadata-url http://127.0.0.1:8080 "
    "--storage-score-storage-url http://127.0.0.1:8080": "Snakemake needs Python 3.11; "
    "tests/e2e/test_snakemake.py runs such a workflow against a platform",
}
FENCE = re.compile(
    r"^(?P<indent> *)```(?P<lang>\w*)(?P<info>[^\n]*)\n(?P<body>.*?)^(?P=indent)``` *$",
    re.MULTILINE | re.DOTALL,
)
TITLE = re.compile(r'title="([^"]+)"')
SHELLS = {"sh", "shell", "console", "zsh"}  # commands belong in `bash` blocks, which run
SERVE = re.compile(r"^score-server serve (?P<args>[^|&;]*?)\s*$", re.MULTILINE)
TOOLS = ("curl", "samtools", "fusermount3")
PLACEHOLDERS = {  # placeholder -> the demo file whose object id it stands for
    "<object id>": "DONOR-1-N.bam",
    "<vcf object id>": "DONOR-1-N.vcf.gz",
    "<cram object id>": "DONOR-1-N.cram",
    "<open object id>": "clinical.tsv",
}


@dataclass
class Block:
    page: Path
    number: int
    lang: str
    title: str
    body: str

    @property
    def first_line(self) -> str:
        return self.body.splitlines()[0].rstrip() if self.body.strip() else ""

    def __str__(self) -> str:
        return f"{self.page.relative_to(ROOT)} block {self.number} ({self.first_line!r})"


def blocks(page: Path) -> list[Block]:
    found = []
    for n, m in enumerate(FENCE.finditer(page.read_text()), 1):
        indent = len(m["indent"])
        body = "".join(line[indent:] for line in m["body"].splitlines(keepends=True))
        title = TITLE.search(m["info"])
        found.append(Block(page, n, m["lang"], title[1] if title else "", body))
    return found


RUN = ("bash", "python")


def pages_with_commands() -> list[Path]:
    return [p for p in PAGES if any(b.lang in RUN for b in blocks(p))]


def test_commands_are_in_bash_blocks_and_every_not_run_entry_names_a_block():
    every = [b for p in PAGES for b in blocks(p)]
    elsewhere = [str(b) for b in every if b.lang in SHELLS]
    assert not elsewhere, f"commands outside `bash` blocks are not run: {elsewhere}"
    first_lines = {b.first_line for b in every if b.lang in RUN}
    stale = sorted(set(NOT_RUN) - first_lines)
    assert not stale, f"NOT_RUN entries that name no block: {stale}"


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory):
    """The demo study on a platform of this module's own (pages rotate keys, write, audit)."""
    for tool in TOOLS:
        need(tool)
    with init_demo_server(tmp_path_factory.mktemp("docs-platform") / "data") as server:
        yield server


class Reader:
    """One page's reader: its directory, its platform, its servers."""

    def __init__(self, page: Path, work: Path, platform: Server, token: str) -> None:
        self.page, self.work = page, work
        self.data_dir = platform.data_dir
        self.ports = {n: free_port() for n in (8080, 8081, 8082)}
        self.ports[8080] = platform.port
        self.token = token
        ids = {r.fileName: r.objectId for r in parse_download(platform.manifest.read_text(), "")}
        self.words = {"<your token>": token, **{k: ids[v] for k, v in PLACEHOLDERS.items()}}
        home = work / "home"
        home.mkdir(parents=True)
        url = f"http://127.0.0.1:{self.ports[8080]}"
        self.env = {
            **{k: v for k, v in os.environ.items() if k != "SCORE_CLIENT_CONF_DIR"},
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "HOME": str(home),
            "METADATA_URL": url,
            "STORAGE_URL": url,
            "ACCESSTOKEN": token,
        }
        self.own = work / "srv" / "pyscore"
        self.namespace: dict[str, object] = {"__name__": "__docs__"}  # the page's notebook
        self.state = work / ".exported"
        self.pids = work / ".servers"

    def substitute(self, text: str) -> str:
        text = re.sub(r"\b808([0-2])\b", lambda m: str(self.ports[int(m[0])]), text)
        for word, value in self.words.items():
            text = text.replace(word, value)
        return text.replace("/srv/pyscore", str(self.data_dir))

    def background_servers(self, body: str) -> tuple[str, list[int]]:
        """`score-server serve ...` alone on its line: started in the background."""
        ports = [int(p) for p in re.findall(r"--port (\d+)", "\n".join(SERVE.findall(body)))]
        logs = self.work / "serve.log"
        return (
            SERVE.sub(
                lambda m: f"score-server serve {m['args']} >>{logs} 2>&1 & echo $! >>{self.pids}",
                body,
            ),
            ports,
        )

    def run_python(self, block: Block) -> None:
        """A `python` block as a notebook cell: the page's namespace, the reader's
        environment (as a shell block's) and directory; restored afterwards."""
        saved_env, saved_cwd = dict(os.environ), os.getcwd()
        os.environ.clear()
        os.environ.update(self.env)
        os.chdir(self.work)
        try:
            exec(compile(self.substitute(block.body), str(block), "exec"), self.namespace)
        except Exception as exc:
            raise AssertionError(f"{block} failed: {type(exc).__name__}: {exc}") from exc
        finally:
            os.chdir(saved_cwd)
            os.environ.clear()
            os.environ.update(saved_env)

    def do(self, block: Block) -> None:
        if block.lang == "python" and block.first_line not in NOT_RUN:
            self.run_python(block)
            return
        if block.lang != "bash":
            if block.title:
                path = self.work / block.title
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(self.substitute(block.body))
            return
        if block.first_line in NOT_RUN:
            return
        if "score-server init" in block.body and self.data_dir != self.own:
            self.data_dir, self.ports[8080] = self.own, free_port()  # a platform of its own
        body, ports = self.background_servers(self.substitute(block.body))
        waits = "".join(  # a server started above answers before the next block (a 60 s bound)
            f"for _ in $(seq 600); do curl -sf -o /dev/null http://127.0.0.1:{port}/isAlive "
            f"&& break; sleep 0.1; done; curl -sf -o /dev/null http://127.0.0.1:{port}/isAlive\n"
            for port in ports
        )
        script = (
            f"set -e\n[ ! -f {self.state} ] || . {self.state}\n{body}\n{waits}"
            f"export -p > {self.state}\n"
        )
        result = subprocess.run(
            ["bash", "-c", script],
            cwd=self.work,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        logs = self.work / "serve.log"
        assert result.returncode == 0, (
            f"{block} failed with exit {result.returncode}:\n{block.body}\n"
            f"stdout: {result.stdout[-2000:]}\nstderr: {result.stderr[-2000:]}\n"
            f"servers: {logs.read_text()[-2000:] if logs.exists() else '(none)'}"
        )

    def close(self) -> None:
        mount = self.work / "home" / "score"
        if mount.is_mount():
            subprocess.run(["fusermount3", "-u", "-z", str(mount)], check=False, timeout=30)
        pids = [int(p) for p in self.pids.read_text().split()] if self.pids.exists() else []
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 60  # they end at once; a bound before SIGKILL
        for pid in pids:
            while alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize(
    "page", pages_with_commands(), ids=lambda p: str(p.relative_to(ROOT).with_suffix(""))
)
def test_every_command_of_the_page_runs(page: Path, platform: Server, tmp_path: Path):
    token = platform.token("PROGRAMDATA-DEMO.READ PROGRAMDATA-DEMO.WRITE", "--user", "researcher")
    reader = Reader(page, tmp_path, platform, token)
    try:
        for block in blocks(page):
            reader.do(block)
    finally:
        reader.close()
