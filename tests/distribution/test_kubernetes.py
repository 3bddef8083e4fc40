"""deploy/kubernetes rendered by `kubectl kustomize` and validated against the Kubernetes
schemas (kubernetes-validate bundles them: no cluster, no network), then read as an operator
and a reviewer would: probes on the health endpoints, the migration Job, secrets only as
files of a Secret, pods that run as non-root on a read-only root file system, commands our
CLI accepts and settings our server knows."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pyscore.server.cli import parser
from pyscore.server.settings import ENV_PREFIX, NOT_FROM_ENV, Settings
from tests.conftest import need, run

yaml = pytest.importorskip("yaml")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"
VERSIONS = ("1.29.0", "1.37.0")  # the oldest still maintained by providers here, the newest
SECRET_FIELDS = ("url_signing_pepper", "database_url", "s3_access_key", "s3_secret_key")
FIELDS = {f.name for f in dataclasses.fields(Settings)} - set(NOT_FROM_ENV)


def render(overlay: str) -> list[dict]:
    out = run(need("kubectl"), "kustomize", str(KUBE / overlay), check=True)
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


@pytest.fixture(scope="module", params=["base", "example"])
def docs(request) -> list[dict]:
    return render(request.param)


def one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"{kind} {name or ''}: {len(found)} found"
    return found[0]


def pods(docs: list[dict]) -> list[dict]:
    """The pod templates: the Deployment's and the migration Job's."""
    return [one(docs, kind)["spec"]["template"]["spec"] for kind in ("Deployment", "Job")]


@pytest.mark.parametrize("version", VERSIONS)
def test_the_manifests_validate_against_the_kubernetes_schemas(docs, version) -> None:
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)  # raises on an error
    kinds = {d["kind"] for d in docs}
    assert {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "Job"} <= kinds


def test_probes_resources_and_scrape_annotations(docs) -> None:
    deployment = one(docs, "Deployment")
    template = deployment["spec"]["template"]
    (server,) = template["spec"]["containers"]
    port = server["ports"][0]["containerPort"]
    assert server["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert server["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    # the startup probe outlasts --wait-for-schema: a new release waits for its migration
    startup = server["startupProbe"]
    wait = float(
        next(a for a in server["command"] if a.startswith("--wait-for-schema=")).split("=")[1]
    )
    assert startup["periodSeconds"] * startup["failureThreshold"] >= wait
    assert server["resources"]["requests"]["cpu"] and server["resources"]["requests"]["memory"]
    notes = template["metadata"]["annotations"]
    assert notes["prometheus.io/scrape"] == "true" and notes["prometheus.io/path"] == "/metrics"
    assert notes["prometheus.io/port"] == str(port)
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    labels = template["metadata"]["labels"]
    for selecting in (one(docs, "Service"), one(docs, "PodDisruptionBudget")):
        selector = selecting["spec"]["selector"]
        selector = selector.get("matchLabels", selector)
        assert selector.items() <= labels.items(), selecting["kind"]


def test_the_migration_job_migrates_with_the_servers_image_and_settings(docs) -> None:
    server, job = (p["containers"][0] for p in pods(docs))
    assert job["command"][:2] == ["score-server", "migrate"]
    assert "migrate" not in server["command"]
    assert job["image"] == server["image"]
    assert job["envFrom"] == server["envFrom"] and job["env"] == server["env"]
    spec = one(docs, "Job")["spec"]
    assert spec["template"]["spec"]["restartPolicy"] == "Never" and spec["backoffLimit"] > 0


def test_the_commands_are_ones_our_cli_accepts(docs) -> None:
    for pod in pods(docs):
        command = pod["containers"][0]["command"]
        assert command[0] == "score-server"
        parser().parse_args(command[1:])  # exits (fails the test) on an unknown option


def test_no_secret_in_a_configmap_and_secrets_only_as_files(docs) -> None:
    config = one(docs, "ConfigMap", "pyscore-config")["data"]
    for name in config:
        assert name.startswith(ENV_PREFIX) and name[len(ENV_PREFIX) :].lower() in FIELDS, name
    assert not {f"{ENV_PREFIX}{f.upper()}" for f in SECRET_FIELDS} & set(config)
    for pod in pods(docs):
        (container,) = pod["containers"]
        secret_mounts = {
            m["mountPath"]
            for m in container["volumeMounts"]
            if any(v["name"] == m["name"] and "secret" in v for v in pod["volumes"])
        }
        files = {e["name"]: e for e in container["env"]}
        for field in SECRET_FIELDS:
            entry = files[f"{ENV_PREFIX}{field.upper()}_FILE"]
            assert "valueFrom" not in entry  # a path, not the secret itself
            assert any(entry["value"].startswith(m + "/") for m in secret_mounts)
        assert not any(name.removesuffix("_FILE") in config for name in files)


def test_pods_run_as_non_root_on_a_read_only_root_file_system(docs) -> None:
    for pod in pods(docs):
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]


def test_the_ingress_component_sets_the_proxy_settings() -> None:
    docs = render("example")
    config = one(docs, "ConfigMap", "pyscore-config")["data"]
    rule = one(docs, "Ingress")["spec"]["rules"][0]
    assert config["PYSCORE_PUBLIC_URL"] == f"https://{rule['host']}"
    assert config["PYSCORE_TRUSTED_PROXIES"]
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == one(docs, "Service")["metadata"]["name"]
    assert all(d["metadata"].get("namespace") == "pyscore" for d in docs)
    assert "Ingress" not in {d["kind"] for d in render("base")}  # optional
