"""`bash scripts/demo.sh` (the README's first command) as a newcomer runs it: it ends with its
platform still serving, the addresses it prints open, and the stop command it prints stops it.
(Set-up is skipped: the suite runs in the venv scripts/setup.sh made.)"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx

from tests.conftest import free_port, need
from tests.e2e.test_docs_examples import alive

ROOT = Path(__file__).resolve().parents[2]


def test_demo_leaves_its_platform_serving_and_says_how_to_stop_it(tmp_path):
    need("curl")
    need("samtools")
    work, port = tmp_path / "demo", free_port()
    env = {**os.environ, "SETUP": "0", "WORK": str(work), "PORT": str(port)}
    done = subprocess.run(
        ["bash", "scripts/demo.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    pid_file = work / "server.pid"
    try:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        out = done.stdout
        base = f"http://127.0.0.1:{port}"
        assert f"{base}/repository" in out
        viewer = re.search(rf"{re.escape(base)}/file/[\w-]+/view\?region=chr1:10000-12000", out)
        assert viewer, out
        token = re.search(r"token \(PROGRAMDATA-DEMO.READ, one day\): (\S+)", out)[1]
        stop = re.search(r"stop it with: (.+)", out)[1]
        # the script has ended; its platform has not
        assert httpx.get(f"{base}/repository", timeout=30).status_code == 200
        page = httpx.get(
            viewer[0], headers={"Authorization": f"Bearer {token}", "Accept": "text/html"}
        )
        assert page.status_code == 200 and 'id="viewer"' in page.text
        pid = int(pid_file.read_text())
        subprocess.run(["bash", "-c", stop], check=True, timeout=30)
        deadline = time.monotonic() + 15
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(pid)
    finally:
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
