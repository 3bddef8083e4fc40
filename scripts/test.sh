#!/usr/bin/env bash
# Set up everything the tests need on a fresh Debian machine, then run lint and the tests:
#   1. the whole suite on the embedded default (SQLite + local object store);
#   2. the client's end-to-end tests on the oldest supported Python (3.9, in .venv-oldest), the
#      rest having run on the newest (.venv);
#   3. the integration suite on PostgreSQL + local store;
#   4. the integration suite on PostgreSQL + a real S3 server (scripts/s3.sh: Ceph RGW, else SeaweedFS).
# PYSCORE_BACKENDS=sqlite (or "sqlite oldest postgres") runs fewer passes. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
BACKENDS=${PYSCORE_BACKENDS:-sqlite oldest postgres s3}

missing=()
for pair in samtools:samtools bcftools:bcftools tabix:tabix curl:curl fusermount3:fuse3 \
            aria2c:aria2 chromium:chromium prometheus:prometheus node:nodejs npm:npm; do
  command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
bash scripts/setup.sh test
# a real OpenID provider for the identity tests (oidc-provider, as locked in tests/oidc)
npm ci --prefix tests/oidc --no-audit --no-fund --loglevel=error
export PYSCORE_REQUIRE_TOOLS=1
.venv/bin/ruff check src tests bench
.venv/bin/ruff format --check src tests bench
.venv/bin/mypy  # the files and strictness are in pyproject.toml

WORK=$(mktemp -d /tmp/pyscore-test.XXXXXX)
chmod 755 "$WORK"  # PostgreSQL runs as its own user and must reach its data dir
cleanup() {
  bash scripts/postgres.sh stop "$WORK/pg" || true
  bash scripts/s3.sh stop "$WORK/s3" || true
  rm -rf "$WORK"
}
trap cleanup EXIT
BACKEND_SUITE=(tests/integration tests/e2e/test_download.py tests/e2e/test_upload.py)
CLIENT_SUITE=(tests/unit tests/e2e/test_download.py tests/e2e/test_download_faults.py
              tests/e2e/test_upload.py tests/e2e/test_view.py tests/e2e/test_mount.py
              tests/e2e/test_cli_errors.py tests/e2e/test_client_files.py
              tests/e2e/test_original_platform.py tests/e2e/test_wan.py)

if [[ " $BACKENDS " == *" sqlite "* ]]; then
  echo "== tests: SQLite + local store, on $(.venv/bin/python -V)"
  .venv/bin/python -m pytest -q "$@"
fi
if [[ " $BACKENDS " == *" oldest "* ]]; then
  OLDEST=$(bash scripts/python.sh oldest)
  VENV=.venv-oldest PYTHON="$OLDEST" bash scripts/setup.sh test
  echo "== tests: the client's end-to-end tests on $(.venv-oldest/bin/python -V)"
  .venv-oldest/bin/python -m pytest -q "${CLIENT_SUITE[@]}" "$@"
fi
if [[ " $BACKENDS " == *" postgres "* || " $BACKENDS " == *" s3 "* ]]; then
  PG_ENV=$(bash scripts/postgres.sh start "$WORK/pg" 55432)  # a failure stops the run here
  eval "$PG_ENV"
  [ -n "${PYSCORE_TEST_POSTGRES:-}" ] || { echo "PostgreSQL did not start" >&2; exit 1; }
  export PYSCORE_TEST_POSTGRES
fi
if [[ " $BACKENDS " == *" postgres "* ]]; then
  echo "== tests: PostgreSQL + local store"
  .venv/bin/python -m pytest -q "${BACKEND_SUITE[@]}" "$@"
fi
if [[ " $BACKENDS " == *" s3 "* ]]; then
  S3_ENV=$(bash scripts/s3.sh start "$WORK/s3" 7481)  # a failure stops the run here
  eval "$S3_ENV"
  [ -n "${S3_ENDPOINT:-}" ] || { echo "no S3 server started" >&2; exit 1; }
  export PYSCORE_TEST_S3="$S3_ENDPOINT,$S3_ACCESS_KEY,$S3_SECRET_KEY"
  echo "== tests: PostgreSQL + S3"
  .venv/bin/python -m pytest -q "${BACKEND_SUITE[@]}" "$@"
fi
