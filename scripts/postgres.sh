#!/usr/bin/env bash
# A throwaway PostgreSQL 15 server on loopback for a trial platform, tests and benchmarks (no
# systemd needed; installs Debian's postgresql-15 if missing).
#   scripts/postgres.sh start DIR [PORT]  starts it; says on stderr how to use and stop it, and
#                                         prints on stdout the line scripts/test.sh evals
#   scripts/postgres.sh stop DIR
set -euo pipefail
cmd=${1:-}; dir=${2:-}; port=${3:-55432}
if [[ ! $cmd =~ ^(start|stop)$ || -z $dir ]]; then
  echo "usage: scripts/postgres.sh start DIR [PORT] | stop DIR  (a throwaway PostgreSQL 15" \
       "on 127.0.0.1 for a trial or the tests)" >&2
  exit 2
fi
BIN=/usr/lib/postgresql/15/bin
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
if [[ $cmd == stop ]]; then
  if [ -f "$dir/data/postmaster.pid" ]; then
    as_pg "$BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    echo "PostgreSQL in $dir stopped" >&2
  fi
  exit 0
fi
if [ ! -x "$BIN/initdb" ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get install -y -qq --no-install-recommends postgresql-15 >/dev/null 2>&1 ||
    { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends postgresql-15 >/dev/null; }
fi
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
chmod 755 "$dir"
[ "$(id -u)" = 0 ] && chown postgres "$dir"
if [ ! -f "$dir/data/PG_VERSION" ]; then
  as_pg "$BIN/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --no-sync >/dev/null
fi
as_pg "$BIN/pg_ctl" -D "$dir/data" -l "$dir/log" -w \
  -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300" start >/dev/null
url=postgresql://postgres@127.0.0.1:$port/postgres
cat >&2 <<EOF
PostgreSQL 15 is running on 127.0.0.1:$port, data and log in $dir (loopback only, no password, fsync off: for a trial or the tests, not for data you keep)
  a trial platform: score-server init --data-dir DIR --database-url $url
  stop it:          bash scripts/postgres.sh stop $dir
EOF
echo "export PYSCORE_TEST_POSTGRES=$url"  # scripts/test.sh evals this line
