#!/usr/bin/env bash
# A throwaway PostgreSQL 15 server on loopback for tests and benchmarks (no systemd needed).
#   scripts/postgres.sh start DIR PORT   installs if needed, starts, prints an env line to eval
#   scripts/postgres.sh stop DIR
set -euo pipefail
cmd=${1:-}; dir=${2:-}; port=${3:-55432}
[[ -n $cmd && -n $dir ]] || { echo "usage: postgres.sh start|stop DIR [PORT]" >&2; exit 2; }
BIN=/usr/lib/postgresql/15/bin
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
if [[ $cmd == stop ]]; then
  [ -d "$dir/data" ] && as_pg "$BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
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
echo "export PYSCORE_TEST_POSTGRES=postgresql://postgres@127.0.0.1:$port/postgres"
