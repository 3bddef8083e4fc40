#!/usr/bin/env bash
# The main job on the embedded default: a local server with generated sample data, a manifest
# download, verified, and a region slice of a remote BAM. The platform keeps running at the end,
# so the File Repository and genome viewer addresses it prints open in a browser; the last line
# says how to stop it. Running it again stops the previous one first.
#   WORK (default ./demo-data), PORT (default 8080); SETUP=0 skips scripts/setup.sh (the tests).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${SETUP:-1}" = 0 ] || bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
WORK=${WORK:-$PWD/demo-data}
PORT=${PORT:-8080}
if [ -f "$WORK/server.pid" ]; then  # the platform an earlier run left serving
  kill "$(cat "$WORK/server.pid")" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$(cat "$WORK/server.pid")" 2>/dev/null || break; sleep 0.1; done
fi
rm -rf "$WORK" && mkdir -p "$WORK"

score-server init --data-dir "$WORK/platform" > "$WORK/init.txt"
MANIFEST=$(score-server demo --data-dir "$WORK/platform" | tail -n 1)
TOKEN=$(score-server token create --data-dir "$WORK/platform" --scopes PROGRAMDATA-DEMO.READ \
        --user researcher --expires-in 1d 2>/dev/null)
nohup score-server serve --data-dir "$WORK/platform" --port "$PORT" > "$WORK/server.log" 2>&1 &
SERVER=$!
echo "$SERVER" > "$WORK/server.pid"
trap '[ -n "${KEEP:-}" ] || kill $SERVER 2>/dev/null || true' EXIT  # stopped only on failure
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/isAlive" >/dev/null && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$PORT/isAlive" >/dev/null || { cat "$WORK/server.log" >&2; exit 1; }

export ACCESSTOKEN=$TOKEN METADATA_URL=http://127.0.0.1:$PORT STORAGE_URL=http://127.0.0.1:$PORT
echo "== manifest: $MANIFEST"
score-client manifest --manifest "$MANIFEST"
echo "== download (parallel, resumable, MD5-verified)"
score-client download --manifest "$MANIFEST" --output-dir "$WORK/download"
ls -l "$WORK/download"
BAM_ID=$(awk -F'\t' '$5=="DONOR-1-N.bam"{print $3}' "$MANIFEST")
echo "== region slice chr1:10000-12000 of DONOR-1-N.bam: only the byte ranges that hold it move"
score-client view --object-id "$BAM_ID" --query chr1:10000-12000 > "$WORK/slice.sam"
grep -v '^@' "$WORK/slice.sam" | cut -f1-6 | head -n 5
echo "   ($(grep -vc '^@' "$WORK/slice.sam") alignments in $WORK/slice.sam)"
KEEP=1
echo "== done; data in $WORK. The platform is still serving (pid $SERVER):"
echo "   File Repository: http://127.0.0.1:$PORT/repository"
echo "   the same region in the genome viewer (sign in with the token below first):"
echo "   http://127.0.0.1:$PORT/file/$BAM_ID/view?region=chr1:10000-12000"
echo "   token (PROGRAMDATA-DEMO.READ, one day): $TOKEN"
echo "   stop it with: kill \$(cat $WORK/server.pid)"
