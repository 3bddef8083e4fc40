#!/usr/bin/env bash
# Set up everything the tests need on a fresh Debian machine, then run lint and the tests:
#   1. the whole suite on the embedded default (SQLite + local object store);
#   2. the integration suite on PostgreSQL + local store;
#   3. the integration suite on PostgreSQL + Ceph RGW (S3), when ../shared/tools/ceph-s3 exists.
# PYSCORE_BACKENDS=sqlite (or "sqlite postgres") runs fewer passes. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BACKENDS=${PYSCORE_BACKENDS:-sqlite postgres s3}

missing=()
for pair in samtools:samtools bcftools:bcftools tabix:tabix curl:curl fusermount3:fuse3 \
            aria2c:aria2 chromium:chromium; do
  command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
bash scripts/setup.sh test
export PYSCORE_REQUIRE_TOOLS=1
.venv/bin/ruff check src tests $(ls -d bench 2>/dev/null)

WORK=$(mktemp -d /tmp/pyscore-test.XXXXXX)
chmod 755 "$WORK"  # PostgreSQL runs as its own user and must reach its data dir
cleanup() {
  bash scripts/postgres.sh stop "$WORK/pg" || true
  [ -x ../shared/tools/ceph-s3 ] && ../shared/tools/ceph-s3 stop "$WORK/rgw" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
BACKEND_SUITE=(tests/integration tests/e2e/test_download.py tests/e2e/test_upload.py)

if [[ " $BACKENDS " == *" sqlite "* ]]; then
  echo "== tests: SQLite + local store"
  .venv/bin/python -m pytest -q "$@"
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
  if [ -x "$ROOT/../shared/tools/ceph-s3" ]; then
    S3_ENV=$("$ROOT/../shared/tools/ceph-s3" start "$WORK/rgw" 7481)
    eval "$S3_ENV"
    [ -n "${S3_ENDPOINT:-}" ] || { echo "Ceph RGW did not start" >&2; exit 1; }
    export PYSCORE_TEST_S3="$S3_ENDPOINT,$S3_ACCESS_KEY,$S3_SECRET_KEY"
    echo "== tests: PostgreSQL + Ceph RGW (S3)"
    .venv/bin/python -m pytest -q "${BACKEND_SUITE[@]}" "$@"
  else
    echo "== skipping the S3 pass: ../shared/tools/ceph-s3 is not here"
  fi
fi
