"""pyscore's image (Containerfile, scripts/image.sh) run with podman as its users run it: the
original's documented Docker commands for `overture/score` with this image's name, and the
platform (`init`, `demo`, `serve`) as an operator runs it, as a non-root user writing only
its volume; the bad inputs of a deployment, each one line and a non-zero exit; and a second
build of the same commit and lock giving identical layers."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pyscore.wire.manifest import parse_download
from tests.conftest import free_port, need
from tests.distribution.podman import TAG, build, inspect, podman, unique, wait_ready
from tests.publish import file_md5

USER = 10001  # the image's user (Containerfile)


@pytest.fixture(scope="module")
def image() -> str:
    return build()  # scripts/image.sh installs podman and the rest where missing


@dataclass
class Platform:
    url: str
    container: str
    volume: str
    manifest: str  # the demo manifest's text

    def token(self, scopes: str) -> str:
        out = podman(
            "exec",
            self.container,
            "score-server",
            "token",
            "create",
            "--data-dir",
            "/data",
            "--scopes",
            scopes,
        )
        return out.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def platform(image: str) -> Iterator[Platform]:
    """`init` and `demo` in a volume, then `serve` from it with a read-only root file system,
    published on 127.0.0.1 only."""
    volume, name, port = unique("pyscore-data"), unique("pyscore-serve"), free_port()
    podman("volume", "create", volume)
    try:
        run = ("run", "--rm", "--no-healthcheck", "-v", f"{volume}:/data", image)
        podman(*run, "score-server", "init", "--data-dir", "/data")
        demo = podman(*run, "score-server", "demo", "--data-dir", "/data")
        manifest_path = demo.stdout.strip().splitlines()[-1]
        podman(
            "run", "-d", "--name", name, "--read-only", "--network", "slirp4netns",
            "-p", f"127.0.0.1:{port}:8080", "-v", f"{volume}:/data", image,
            "score-server", "serve", "--data-dir", "/data", "--host", "0.0.0.0", "--port", "8080",
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, name)
        manifest = podman("exec", name, "cat", manifest_path).stdout
        yield Platform(url, name, volume, manifest)
    finally:
        podman("rm", "-f", "-v", "-t", "2", name, check=False)
        podman("volume", "rm", "-f", volume, check=False)


def client_run(platform: Platform, token: str, *args: str, volume: Path | None = None):
    """The page's form: `docker run -e ACCESSTOKEN ... IMAGE bin/score-client ...`, with
    the settings from the environment and the caller's directory at /score-client/manifest."""
    mount = ["-v", f"{volume}:/score-client/manifest"] if volume else []
    return podman(
        "run", "--rm", "--no-healthcheck", "--read-only", "--network", "host",
        "-e", f"ACCESSTOKEN={token}", "-e", f"METADATA_URL={platform.url}",
        "-e", f"STORAGE_URL={platform.url}", *mount, TAG, *args,
        check=False,
    )  # fmt: skip


def test_the_image_opens_a_shell_in_score_client_as_the_original_does(image: str) -> None:
    found = inspect(image)
    config = found["Config"]
    assert not config.get("Entrypoint")
    assert config["WorkingDir"] == "/score-client"
    assert config["User"] == f"{USER}:{USER}"
    assert "8080/tcp" in config["ExposedPorts"] and "/data" in config["Volumes"]
    assert "/health/live" in " ".join(found["Healthcheck"]["Test"])
    # `docker run -it overture/score`: a shell (here fed its commands on stdin)
    shell = podman(
        "run", "--rm", "-i", "--no-healthcheck", image,
        stdin="pwd; ls bin; command -v score-client samtools fusermount3; id -u\n",
    )  # fmt: skip
    assert shell.stdout.split() == [
        "/score-client",
        "score-client",
        "/score-client/bin/score-client",
        "/usr/bin/samtools",
        "/usr/bin/fusermount3",
        str(USER),
    ]


def test_serve_runs_as_a_non_root_user_and_writes_only_its_volume(platform: Platform) -> None:
    assert podman("healthcheck", "run", platform.container).returncode == 0
    users = podman("top", platform.container, "huser").stdout.split()[1:]
    assert users and set(users) == {str(USER)}
    # the root file system is read-only, and nothing but podman's own files changed in it
    changed = podman("diff", platform.container).stdout.split("\n")
    assert {line.split()[-1] for line in changed if line.strip()} <= {"/etc", "/run"}


def test_download_by_manifest_and_view_from_a_second_container(
    platform: Platform, tmp_path: Path
) -> None:
    token = platform.token("PROGRAMDATA-DEMO.READ")
    mine = tmp_path / "mine"
    mine.mkdir()
    os.chown(mine, USER, USER)  # a directory the container's user may write
    (mine / "manifest.tsv").write_text(platform.manifest)
    result = client_run(
        platform, token, "bin/score-client", "download", "--manifest", "manifest.tsv",
        "--output-dir", "manifest/data", volume=mine,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = parse_download(platform.manifest, "manifest.tsv")
    assert rows
    for row in rows:
        assert file_md5(mine / "data" / row.fileName) == row.fileMd5sum

    bam = next(r for r in rows if r.fileName == "DONOR-1-N.bam")
    region = "chr1:1000-3000"
    view = client_run(
        platform, token, "score-client", "view", "--object-id", bam.objectId, "--query", region
    )
    assert view.returncode == 0, view.stderr
    records = [line for line in view.stdout.splitlines() if not line.startswith("@")]
    want = podman(
        "exec", platform.container, "samtools", "view",
        f"/data/demo-files/DEMO/{bam.fileName}", region,
    )  # fmt: skip
    assert records and records == want.stdout.splitlines()


def test_the_documented_privileged_mount_lists_and_slices_inside_the_container(
    platform: Platform, tmp_path: Path
) -> None:
    """`docker run -it --rm -e ACCESSTOKEN --privileged -v $(pwd):/score-client/manifest IMAGE
    bin/score-client mount --mount-point /mnt --manifest NAME`, `docker exec ... find /mnt`,
    samtools inside. Hosts make /dev/fuse 0666; a host where it is 0600 (these sandboxes)
    lets only root open it, so the test makes the container's own device node 0666 first."""
    need("fusermount3")
    token = platform.token("PROGRAMDATA-DEMO.READ")
    (tmp_path / "manifest.tsv").write_text(platform.manifest)
    tmp_path.chmod(0o755)
    name = unique("pyscore-mount")
    env = ["-e", f"ACCESSTOKEN={token}", "-e", f"METADATA_URL={platform.url}",
           "-e", f"STORAGE_URL={platform.url}"]  # fmt: skip
    mount = ["bin/score-client", "mount", "--mount-point", "/mnt", "--manifest", "manifest.tsv"]
    opened = stat.S_IMODE(os.stat("/dev/fuse").st_mode) & 0o006 == 0o006
    run = ["run", "-d", "--name", name, "--no-healthcheck", "--network", "host", *env,
           "--privileged", "-v", f"{tmp_path}:/score-client/manifest", TAG]  # fmt: skip
    try:
        if opened:
            podman(*run, *mount)
        else:
            podman(*run, "sleep", "600")
            podman("exec", "-u", "0", name, "chmod", "666", "/dev/fuse")
            podman("exec", "-d", name, *mount)
        listed: list[str] = []
        for _ in range(60):  # bounded: the mount is up within seconds
            listed = podman("exec", name, "find", "/mnt", check=False).stdout.split()
            if any(p.endswith("DONOR-1-N.bam") for p in listed):
                break
            podman("exec", name, "sleep", "0.5", check=False)
        rows = parse_download(platform.manifest, "manifest.tsv")
        names = {Path(p).name for p in listed}
        assert {r.fileName for r in rows} <= names, listed
        bam = next(p for p in listed if p.endswith("/DONOR-1-N.bam"))
        mounted = podman("exec", name, "samtools", "view", bam, "chr1:1000-3000").stdout
        local = podman(
            "exec", platform.container, "samtools", "view",
            "/data/demo-files/DEMO/DONOR-1-N.bam", "chr1:1000-3000",
        ).stdout  # fmt: skip
        assert mounted and mounted == local
        users = podman("top", name, "huser", "args").stdout
        assert f"{USER} " in users and "score-client mount" in users  # not root
    finally:
        podman("rm", "-f", "-v", "-t", "2", name, check=False)


def one_line(result) -> str:
    assert result.returncode != 0, result.stdout + result.stderr
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    return lines[0]


def test_bad_inputs_of_a_deployment_are_one_line_and_a_non_zero_exit(
    platform: Platform, tmp_path: Path
) -> None:
    serve = ["score-server", "serve", "--data-dir", "/data", "--host", "0.0.0.0"]
    base = ["run", "--rm", "--no-healthcheck", "--network", "none"]
    missing = podman(
        *base, "-v", f"{platform.volume}:/data",
        "-e", "PYSCORE_URL_SIGNING_PEPPER_FILE=/run/secrets/pyscore/pepper", TAG, *serve,
        check=False,
    )  # fmt: skip
    assert one_line(missing) == (
        "score-server: error: PYSCORE_URL_SIGNING_PEPPER_FILE: cannot read "
        "/run/secrets/pyscore/pepper: No such file or directory"
    )
    unreachable = podman(
        *base, "-v", f"{platform.volume}:/data",
        "-e", "PYSCORE_DATABASE_URL=postgresql://pyscore@127.0.0.1:5/pyscore", TAG, *serve,
        check=False,
    )  # fmt: skip
    assert unreachable.returncode == 1
    assert one_line(unreachable).startswith("score-server: error: database: ")
    theirs = tmp_path / "root-owned"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, 0, 0)
    not_writable = podman(
        *base, "-v", f"{theirs}:/data", TAG, "score-server", "init", "--data-dir", "/data",
        check=False,
    )  # fmt: skip
    assert one_line(not_writable) == (
        f"score-server: error: /data is not writable by this account (uid {USER}; the folder "
        "belongs to uid 0): give it to this user, or use another --data-dir"
    )


def test_a_second_build_of_the_same_commit_and_lock_gives_identical_layers(image: str) -> None:
    again = build(f"{TAG}-again", ("PYSCORE_IMAGE_BUILD_ARGS", "--no-cache"))
    try:
        first, second = inspect(image), inspect(again)
        assert first["RootFS"]["Layers"] == second["RootFS"]["Layers"]
        assert first["Created"] == second["Created"]  # the commit's time, not the build's
    finally:
        podman("rmi", again, check=False)
