#!/usr/bin/env bash
# A bounded schemathesis run against a fresh embedded platform (SQLite, local store, the demo
# study) through its /openapi.json, once anonymous and once with an admin token. Passes when
# no answer is a 5xx and every answer's status, Content-Type and body are what the document
# declares (errors included).
#   bash bench/schemathesis.sh            # 90 s per pass
#   SCHEMATHESIS_SECONDS=30 bash bench/schemathesis.sh
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
SECONDS_EACH=${SCHEMATHESIS_SECONDS:-90}
[ -x .venv/bin/schemathesis ] || .venv/bin/pip install -q schemathesis
WORK=$(mktemp -d /tmp/pyscore-schemathesis.XXXXXX)
PORT=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
SERVER_PID=""
cleanup() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

TOKEN=$(.venv/bin/score-server init --data-dir "$WORK/data" | tail -1)
.venv/bin/score-server demo --data-dir "$WORK/data" --reads 200 >/dev/null 2>&1
.venv/bin/score-server serve --data-dir "$WORK/data" --port "$PORT" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$PORT/isAlive" >/dev/null && break
  sleep 0.2
done

CHECKS=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance
status=0
for who in anonymous admin; do
  echo "== schemathesis, $who, ${SECONDS_EACH}s"
  auth=()
  [ "$who" = admin ] && auth=(-H "Authorization: Bearer $TOKEN")
  # from the scratch directory: schemathesis keeps a cache in its working directory
  (cd "$WORK" && "$REPO/.venv/bin/schemathesis" run "http://127.0.0.1:$PORT/openapi.json" \
    --checks "$CHECKS" --max-time "$SECONDS_EACH" --workers 2 --request-timeout 30 \
    --seed 1 --suppress-health-check all "${auth[@]}") || status=1
done
if grep -q "Traceback" "$WORK/server.log"; then
  echo "the server logged a traceback:" >&2
  grep -m1 -A20 "Traceback" "$WORK/server.log" >&2
  status=1
fi
exit $status
