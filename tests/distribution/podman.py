"""Running the project's image with podman in tests: the image built once per session by
scripts/image.sh, containers and volumes named per test run and removed after it."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
# runc and explicit rlimits: what sandboxes like CI's need (scripts/containers.conf says why)
os.environ.setdefault("CONTAINERS_CONF", str(ROOT / "scripts" / "containers.conf"))
TAG = "localhost/pyscore:test"


def podman(*args: str, timeout: float = 300, stdin: str | None = None, check: bool = True):
    """`podman ARGS`, its output as text; podman's own complaints about the missing systemd
    (it runs no periodic health checks without one) are left out of stderr."""
    result = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, input=stdin
    )
    result.stderr = "".join(
        line for line in result.stderr.splitlines(keepends=True) if "level=" not in line
    )
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: {result.returncode}\n{result.stderr}")
    return result


def build(tag: str = TAG, *extra_env: tuple[str, str]) -> str:
    env = {**os.environ, **dict(extra_env)}
    out = subprocess.run(
        ["bash", "scripts/image.sh", tag],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1500,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def inspect(tag: str) -> dict:
    return json.loads(podman("image", "inspect", tag).stdout)[0]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def wait_ready(
    url: str, container: str, seconds: float = 90, restarts: bool = False
) -> httpx.Response:
    """/health/ready of a container's server, waited for (bounded); a container that exits
    fails at once unless it `restarts` (a restart policy brings it back)."""
    deadline, said = time.monotonic() + seconds, ""
    while time.monotonic() < deadline:
        try:
            answer = httpx.get(f"{url}/health/ready", timeout=10)
            if answer.status_code == 200:
                return answer
            said = answer.text
        except httpx.HTTPError as exc:
            said = repr(exc)
        state = podman("inspect", "--format", "{{.State.Running}}", container, check=False)
        if state.stdout.strip() == "false" and not restarts:
            break
        time.sleep(0.5)
    logs = podman("logs", container, check=False)
    pytest.fail(f"{container} is not ready ({said}):\n{logs.stdout}{logs.stderr}")


def build_stand_in(name: str) -> str:
    """A stand-in for a public image (postgres, SeaweedFS, nginx) where no registry is
    reachable: tests/distribution/images/NAME.Containerfile on the local base image."""
    tag = f"localhost/pyscore-test-{name}"
    args = ["build", "--quiet", "--pull=never", "--format", "docker", "--network", "host"]
    cert = os.environ.get("PIP_CERT")
    if cert and Path(cert).is_file():  # a network whose TLS needs a CA of its own
        args += ["-v", f"{cert}:/etc/ssl/build-ca.crt:ro", "--build-arg",
                 "PIP_CERT=/etc/ssl/build-ca.crt"]  # fmt: skip
    folder = ROOT / "tests" / "distribution" / "images"
    podman(*args, "-t", tag, "-f", str(folder / f"{name}.Containerfile"), str(folder), timeout=900)
    return tag
