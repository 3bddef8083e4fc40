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
