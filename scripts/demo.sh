#!/usr/bin/env bash
# The main job on the embedded default: a local server with generated sample data, a manifest
# download, verified, and a region slice of a remote BAM.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
WORK=${WORK:-$PWD/demo-data}
PORT=${PORT:-8080}
rm -rf "$WORK" && mkdir -p "$WORK"

score-server init --data-dir "$WORK/platform" > "$WORK/init.txt"
MANIFEST=$(score-server demo --data-dir "$WORK/platform" | tail -n 1)
TOKEN=$(score-server token create --data-dir "$WORK/platform" --scopes PROGRAMDATA-DEMO.READ \
        --user researcher --expires-in 1d 2>/dev/null)
score-server serve --data-dir "$WORK/platform" --port "$PORT" > "$WORK/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/isAlive" >/dev/null && break; sleep 0.1; done

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
echo "== done; data in $WORK; the File Repository was at http://127.0.0.1:$PORT/repository"
