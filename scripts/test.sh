#!/usr/bin/env bash
# Set up everything the tests need on a fresh Debian machine, then run lint and the tests:
#   1. the whole suite on the embedded default (SQLite + local object store);
#   2. the client's end-to-end tests on the oldest supported Python (3.9, in .venv-oldest), the
#      rest having run on the newest (.venv);
#   3. the integration suite on PostgreSQL + local store, with a real Kafka broker for the
#      analysis-event tests (scripts/kafka.sh, started while the first passes run);
#   4. the integration suite on PostgreSQL + a real S3 server (scripts/s3.sh: Ceph RGW, else SeaweedFS);
#   5. the distributions (tests/distribution): the client tarball, the image (podman), the
#      Kubernetes manifests, the compose platform.
# 1 then 3, and 2 then 4 then 5, run as two lanes side by side; each pass's output is printed when all
# are done. PYSCORE_BACKENDS=sqlite (or "sqlite oldest postgres") runs fewer passes;
# PYSCORE_LANES=1 runs them one after the other. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
BACKENDS=${PYSCORE_BACKENDS:-sqlite oldest postgres s3 dist}

missing=()
for pair in samtools:samtools bcftools:bcftools tabix:tabix curl:curl fusermount3:fuse3 \
            aria2c:aria2 chromium:chromium prometheus:prometheus node:nodejs npm:npm \
            kcat:kcat; do
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
bash scripts/docs.sh  # the docs site: broken links or undocumented settings fail here

WORK=$(mktemp -d /tmp/pyscore-test.XXXXXX)
chmod 755 "$WORK"  # PostgreSQL runs as its own user and must reach its data dir
cleanup() {
  bash scripts/postgres.sh stop "$WORK/pg" || true
  bash scripts/s3.sh stop "$WORK/s3" || true
  bash scripts/kafka.sh stop "$WORK/kafka" || true
  rm -rf "$WORK"
}
trap cleanup EXIT
DIST_SUITE=(tests/distribution)
BACKEND_SUITE=(tests/integration tests/e2e/test_download.py tests/e2e/test_upload.py)
CLIENT_SUITE=(tests/unit tests/e2e/test_download.py tests/e2e/test_download_faults.py
              tests/e2e/test_upload.py tests/e2e/test_view.py tests/e2e/test_mount.py
              tests/e2e/test_cli_errors.py tests/e2e/test_client_files.py
              tests/e2e/test_original_platform.py tests/e2e/test_wan.py
              tests/integration/test_worker_lifecycle.py
              tests/e2e/test_library.py)  # pyscore.Client on 3.9; score:// and Snakemake: newest

# The passes share nothing but the PostgreSQL server (a fresh database per test platform), and
# the tests mostly wait on servers they start, so two lanes run side by side (PYSCORE_LANES=1:
# one after the other): the whole suite on SQLite, then PostgreSQL; the oldest Python, then S3.
wants() { [[ " $BACKENDS " == *" $1 "* ]]; }
if wants oldest; then
  OLDEST=$(bash scripts/python.sh oldest)
  VENV=.venv-oldest PYTHON="$OLDEST" bash scripts/setup.sh test
fi
if wants postgres || wants s3; then
  PG_ENV=$(bash scripts/postgres.sh start "$WORK/pg" 55432)  # a failure stops the run here
  eval "$PG_ENV"
  [ -n "${PYSCORE_TEST_POSTGRES:-}" ] || { echo "PostgreSQL did not start" >&2; exit 1; }
  export PYSCORE_TEST_POSTGRES
fi
if wants postgres; then  # the broker starts beside the first passes; the PostgreSQL one waits
  (status=0
   bash scripts/kafka.sh start "$WORK/kafka" 19092 >"$WORK/kafka.env" 2>"$WORK/kafka.log" || status=$?
   echo $status >"$WORK/kafka.done") &
fi
kafka_vars() {  # the broker's variables for env, once it is up; it must be (PYSCORE_REQUIRE_KAFKA)
  for _ in $(seq 1800); do [ -f "$WORK/kafka.done" ] && break; sleep 0.1; done
  [ "$(cat "$WORK/kafka.done" 2>/dev/null)" = 0 ] || cat "$WORK/kafka.log" >&2
  sed -n 's/^export //p' "$WORK/kafka.env" 2>/dev/null
  echo PYSCORE_REQUIRE_KAFKA=1
}
S3_VARS=()
if wants s3; then
  S3_ENV=$(bash scripts/s3.sh start "$WORK/s3" 7481)  # a failure stops the run here
  eval "$S3_ENV"
  [ -n "${S3_ENDPOINT:-}" ] || { echo "no S3 server started" >&2; exit 1; }
  S3_VARS=(PYSCORE_TEST_S3="$S3_ENDPOINT,$S3_ACCESS_KEY,$S3_SECRET_KEY")
fi

pass() {  # pass NAME TITLE COMMAND...: one pass, its output kept in $WORK/NAME.log
  local name=$1 title=$2
  shift 2
  wants "$name" || return 0
  { echo "== tests: $title"; "$@"; } >"$WORK/$name.log" 2>&1
}
lane_a() {
  pass sqlite "SQLite + local store, on $(.venv/bin/python -V)" \
    env -u PYSCORE_TEST_POSTGRES .venv/bin/python -m pytest -q --ignore="${DIST_SUITE[0]}" "$@" &&
  pass postgres "PostgreSQL + local store, Kafka" \
    env $(kafka_vars) .venv/bin/python -m pytest -q "${BACKEND_SUITE[@]}" "$@"
}
lane_b() {
  pass oldest "the client's end-to-end tests, on Python 3.9 (.venv-oldest)" \
    env -u PYSCORE_TEST_POSTGRES .venv-oldest/bin/python -m pytest -q "${CLIENT_SUITE[@]}" "$@" &&
  pass s3 "PostgreSQL + S3" env "${S3_VARS[@]}" .venv/bin/python -m pytest -q "${BACKEND_SUITE[@]}" "$@" &&
  pass dist "the distributions: tarball, image, manifests, compose" \
    env -u PYSCORE_TEST_POSTGRES .venv/bin/python -m pytest -q "${DIST_SUITE[@]}" "$@"
}
status=0
if [ "${PYSCORE_LANES:-2}" = 1 ]; then
  lane_a "$@" || status=1
  [ $status = 1 ] || lane_b "$@" || status=1
else
  lane_a "$@" & a=$!
  lane_b "$@" & b=$!
  wait $a || status=1
  wait $b || status=1
fi
for name in sqlite oldest postgres s3 dist; do
  [ -f "$WORK/$name.log" ] && cat "$WORK/$name.log"
done
exit $status
