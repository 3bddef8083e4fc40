"""deploy/compose.yaml run with podman-compose on 127.0.0.1: PostgreSQL, SeaweedFS as the S3
store, the migration, two pyscore replicas and nginx in front of them, each from its image
(local stand-ins for the public postgres, SeaweedFS and nginx images: no registry here).
An upload begun through one replica is finished through the other, a download goes through
one replica, X-Forwarded-* is believed from the proxy only, and a download through the proxy
survives one replica being stopped in its middle."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.api import bearer, submit
from tests.conftest import CLIENT, free_port
from tests.distribution.podman import ROOT, build, build_stand_in, podman, unique, wait_ready
from tests.publish import md5, song_payload
from tests.wanlink import WanLink

COMPOSE = ROOT / "deploy" / "compose.yaml"
PODMAN_COMPOSE = Path(sys.executable).parent / "podman-compose"
STUDY = "COMPOSE"
ELSEWHERE = "127.0.0.3"  # the test's own address as a client: neither the proxy nor 127.0.0.1


@dataclass
class Stack:
    project: str
    proxy: str
    replicas: tuple[str, str]
    env: dict[str, str]

    def container(self, service: str) -> str:
        return f"{self.project}_{service}_1"

    def score_server(self, *args: str) -> str:
        out = podman("exec", self.container("pyscore-1"), "score-server", *args,
                     "--data-dir", "/etc/pyscore")  # fmt: skip
        return out.stdout.strip().splitlines()[-1]

    def compose(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(PODMAN_COMPOSE), "-p", self.project, "-f", str(COMPOSE), *args],
            capture_output=True, text=True, timeout=600, env={**os.environ, **self.env},
        )  # fmt: skip


def write_secrets(folder: Path, postgres_port: int) -> None:
    """One file per secret, readable by the services' users (the test runs as root)."""
    password, key, secret = secrets.token_hex(12), secrets.token_hex(8), secrets.token_hex(16)
    files = {
        "postgres_password": password,
        "database_url": f"postgresql://pyscore:{password}@127.0.0.1:{postgres_port}/pyscore",
        "url_signing_pepper": secrets.token_hex(32),
        "s3_access_key": key,
        "s3_secret_key": secret,
        "s3_config.json": json.dumps(
            {
                "identities": [
                    {
                        "name": "pyscore",
                        "credentials": [{"accessKey": key, "secretKey": secret}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        ),
    }
    folder.mkdir(mode=0o755)
    for name, value in files.items():
        (folder / name).write_text(value + "\n")
        (folder / name).chmod(0o644)


def grpc_free_port() -> int:
    """A free port whose +10000 (where SeaweedFS puts each server's gRPC) is free too."""
    for _ in range(200):
        port = free_port()
        if port + 10000 < 65536 and port_free(port + 10000):
            return port
    raise AssertionError("no free port pair")


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if not PODMAN_COMPOSE.exists():
        pytest.fail("podman-compose is not installed (pip install -e '.[test]')")
    image = build()
    work = tmp_path_factory.mktemp("compose")
    work.chmod(0o755)
    ports = {name: free_port() for name in ("POSTGRES_PORT", "REPLICA_1_PORT", "REPLICA_2_PORT",
                                            "PROXY_PORT")}  # fmt: skip
    for name in ("S3_PORT", "S3_MASTER_PORT", "S3_VOLUME_PORT", "S3_FILER_PORT"):
        ports[name] = grpc_free_port()
    write_secrets(work / "secrets", ports["POSTGRES_PORT"])
    proxy = f"http://127.0.0.1:{ports['PROXY_PORT']}"
    env = {
        **{k: str(v) for k, v in ports.items()},
        "PYSCORE_IMAGE": image,
        "POSTGRES_IMAGE": build_stand_in("postgres"),
        "S3_IMAGE": build_stand_in("s3"),
        "PROXY_IMAGE": build_stand_in("proxy"),
        "PYSCORE_SECRETS": str(work / "secrets"),
        "PYSCORE_LISTEN": f"127.0.0.1:{ports['PROXY_PORT']}",
        "PYSCORE_PUBLIC_URL": proxy,
    }
    replicas = tuple(f"http://127.0.0.1:{ports[f'REPLICA_{n}_PORT']}" for n in (1, 2))
    platform = Stack(unique("pyscore-compose").replace("-", ""), proxy, replicas, env)  # type: ignore[arg-type]
    try:
        up = platform.compose("up", "-d")
        assert up.returncode == 0, up.stdout + up.stderr
        for n, url in enumerate(replicas, 1):
            # a replica that found PostgreSQL not yet up exits (one line) and is restarted
            wait_ready(url, platform.container(f"pyscore-{n}"), seconds=180, restarts=True)
        wait_ready(proxy, platform.container("proxy"), restarts=True)
        platform.score_server("study", "create", STUDY)
        yield platform
    finally:
        # the image's VOLUME /data, which the replicas leave unused: `down -v` keeps those
        ours = podman(
            "ps",
            "-a",
            "-q",
            "--filter",
            f"label=io.podman.compose.project={platform.project}",
            check=False,
        ).stdout.split()
        anonymous = (
            podman(
                "inspect", "--format", "{{range .Mounts}}{{.Name}} {{end}}", *ours, check=False
            ).stdout.split()
            if ours
            else []
        )
        platform.compose("down", "-v", "-t", "5")
        for volume in anonymous:
            podman("volume", "rm", "-f", volume, check=False)


@dataclass
class Published:
    token: str
    files: dict[str, bytes]  # object id -> bytes


@pytest.fixture(scope="module")
def published(stack: Stack) -> Published:
    """An analysis submitted and its files uploaded with each upload begun through replica 1
    (POST .../uploads) and finished through replica 2 (parts, complete), then published."""
    token = stack.score_server(
        "token", "create", "--scopes", f"PROGRAMDATA-{STUDY}.READ PROGRAMDATA-{STUDY}.WRITE"
    )
    data = {f"part-{i:03d}.bam": os.urandom(4096 + i) for i in range(40)}
    data["big.bam"] = os.urandom(9 * 1024 * 1024)
    one = httpx.Client(base_url=stack.replicas[0], headers=bearer(token), timeout=60)
    two = httpx.Client(base_url=stack.replicas[1], headers=bearer(token), timeout=60)
    with one, two:
        analysis, ids = submit(one, song_payload(STUDY, data))
        for name, body in data.items():
            object_id = ids[name]
            begun = one.post(f"/upload/{object_id}/uploads",
                             params={"fileSize": len(body), "md5": md5(body)})  # fmt: skip
            assert begun.status_code == 200, begun.text
            spec = begun.json()
            for part in spec["parts"]:
                chunk = body[part["offset"] : part["offset"] + part["partSize"]]
                put = httpx.put(part["url"], content=chunk, timeout=60)  # to the S3 store
                assert put.status_code == 200, put.text
                done = two.post(f"/upload/{object_id}/parts", params={
                    "uploadId": spec["uploadId"], "partNumber": part["partNumber"],
                    "md5": md5(chunk), "etag": put.headers["ETag"]})  # fmt: skip
                assert done.status_code == 200, done.text
            completed = two.post(f"/upload/{object_id}", params={"uploadId": spec["uploadId"]})
            assert completed.status_code == 200, completed.text
        assert two.put(f"/studies/{STUDY}/analysis/publish/{analysis}").status_code == 200
    return Published(token, {ids[name]: body for name, body in data.items()})


def download(url: str, token: str, ids: list[str], out: Path, **popen) -> subprocess.Popen:
    env = {**os.environ, "METADATA_URL": url, "STORAGE_URL": url, "ACCESSTOKEN": token,
           "SCORE_CLIENT_CONF_DIR": str(out.parent / "no-conf")}  # fmt: skip
    return subprocess.Popen(
        [CLIENT, "download", "--object-id", *ids, "--output-dir", str(out),
         "--output-layout", "id", "--index", "false"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, **popen,
    )  # fmt: skip


def assert_downloaded(out: Path, files: dict[str, bytes]) -> None:
    for object_id, body in files.items():
        assert md5((out / object_id).read_bytes()) == md5(body), object_id


def test_a_download_through_one_replica_of_an_upload_finished_through_the_other(
    stack: Stack, published: Published, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    client = download(stack.replicas[0], published.token, list(published.files), out)
    _, err = client.communicate(timeout=300)
    assert client.returncode == 0, err
    assert_downloaded(out, published.files)


def logged_client(stack: Stack, request_id: str) -> str:
    """The client address a replica's JSON request log gives the request with this id."""
    for n in (1, 2):
        logs = podman("logs", stack.container(f"pyscore-{n}"))
        for line in (logs.stdout + logs.stderr).splitlines():
            if request_id in line and line.startswith("{"):
                return json.loads(line)["client"]
    raise AssertionError(f"no replica logged request {request_id}")


def test_x_forwarded_headers_are_believed_from_the_proxy_only(stack: Stack) -> None:
    transport = httpx.HTTPTransport(local_address=ELSEWHERE)
    forged = {"X-Forwarded-For": "198.51.100.7"}
    with httpx.Client(transport=transport, timeout=30) as http:
        cases = {
            "via-proxy": (stack.proxy, {}),
            "via-proxy-forged": (stack.proxy, forged),
            "direct-forged": (stack.replicas[0], forged),
        }
        ids = {}
        for case, (url, headers) in cases.items():
            ids[case] = f"{case}-{secrets.token_hex(6)}"
            r = http.get(f"{url}/studies/all", headers={**headers, "X-Request-ID": ids[case]})
            assert r.status_code == 200, r.text
    # the proxy's hop is believed (else it would be the proxy's own 127.0.0.2); a hop the
    # caller wrote itself is not, through the proxy or straight to a replica
    for case in cases:
        assert logged_client(stack, ids[case]) == ELSEWHERE, case


def test_stopping_a_replica_in_the_middle_of_a_download_does_not_fail_it(
    stack: Stack, published: Published, tmp_path: Path
) -> None:
    """The download's requests cross a long link (800 ms) to the proxy, so they are still
    coming when replica 1 is stopped (gracefully, as an orchestrator does) after the first
    one; the proxy sends the rest to replica 2. Object bytes come from the S3 store. Last in
    this module: replica 1 stays stopped (podman 4.3 cannot restart a container of a compose
    project whose dependency has exited)."""
    proxy_port = int(stack.proxy.rsplit(":", 1)[1])
    out = tmp_path / "out"
    pause = threading.Event()  # never set: a bounded wait between looks
    with WanLink(proxy_port, rtt_ms=800) as link:
        client = download(link.url, published.token, list(published.files), out)
        for _ in range(600):  # bounded: the client's first request arrives within seconds
            if link.stats().requests or client.poll() is not None:
                break
            pause.wait(0.05)
        before = link.stats().requests
        podman("stop", "-t", "10", stack.container("pyscore-1"))
        _, err = client.communicate(timeout=300)
        after = link.stats().requests
    assert client.returncode == 0, err
    assert_downloaded(out, published.files)
    assert after > before, "the download had no request left when the replica stopped"
