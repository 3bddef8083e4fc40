#!/usr/bin/env bash
# Set up everything the tests need on a fresh Debian machine, then run lint and the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
for pair in samtools:samtools bcftools:bcftools tabix:tabix curl:curl fusermount3:fuse3; do
  command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
bash scripts/setup.sh test
export PYSCORE_REQUIRE_TOOLS=1
.venv/bin/ruff check src tests $(ls -d bench 2>/dev/null)
.venv/bin/python -m pytest -q "$@"
