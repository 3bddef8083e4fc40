#!/usr/bin/env bash
# Create a venv (.venv, or $VENV) and install pyscore into it, with an extra when given one
# ("test", "docs"). The Python is $PYTHON, else the newest supported one found (scripts/python.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  PYTHON=${PYTHON:-$(bash scripts/python.sh newest)}
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e ".${1:+[$1]}"  # with an extra when given one
# igv.js for the File Repository's genome viewer, as locked in the package (npm; never committed)
if command -v npm >/dev/null; then
  npm ci --prefix src/pyscore/server/portal/viewer --no-audit --no-fund --loglevel=error
else
  echo "setup.sh: npm not found: the genome viewer stays off until 'score-server viewer install'" >&2
fi
