#!/usr/bin/env bash
# Create a venv (.venv, or $VENV) and install pyscore into it, with test extras when given
# "test". The Python is $PYTHON, else the newest supported one found (scripts/python.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  PYTHON=${PYTHON:-$(bash scripts/python.sh newest)}
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
if [ "${1:-}" = "test" ]; then
  "$VENV/bin/python" -m pip install --quiet -e '.[test]'
else
  "$VENV/bin/python" -m pip install --quiet -e .
fi
