#!/usr/bin/env bash
# Build dist/score-client-<version>-dist.tar.gz, the "Client" tarball of the ARGO page: unpack
# it, put accessToken, metadata.url and storage.url in conf/application.properties, run
# bin/score-client. It runs on the system's Python 3.9 or newer with nothing installed: the
# client's libraries (requirements/client-lock.txt, pinned with hashes) are inside, one copy
# per Python version for Linux x86_64 (glibc >= 2.28, pysam's wheels); identical files are
# hard links, stored once in the archive. Reproducible: the same commit and lock give the
# same bytes (file times from the last commit, names sorted, no owners).
# Needs uv (pip cannot install for another Python version's markers): `pip install uv`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHONS=${PYSCORE_DIST_PYTHONS:-"3.9 3.10 3.11 3.12 3.13 3.14"}
UV=${UV:-$(command -v uv || echo .venv/bin/uv)}
[ -x "$UV" ] || { echo "dist.sh: needs uv (.venv/bin/python -m pip install uv)" >&2; exit 1; }
VERSION=$(sed -n 's/^__version__ = "\([^"]*\)".*/\1/p' src/pyscore/__init__.py)
NAME=score-client-$VERSION
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
root=$STAGE/$NAME
mkdir -p "$root/bin" "$root/conf" "$root/lib"
install -m 755 scripts/dist/score-client "$root/bin/score-client"
install -m 600 scripts/dist/application.properties "$root/conf/application.properties"
for v in $PYTHONS; do
  lib=$root/lib/python$v
  "$UV" pip install --quiet --no-deps --no-compile --only-binary :all: --require-hashes \
    --target "$lib" --python-version "$v" --python-platform x86_64-manylinux_2_28 \
    -r requirements/client-lock.txt
  rm -rf "$lib/bin"  # the libraries' own commands (pygmentize, httpx, ...)
  # pyscore's client and the wire contract it speaks; the server is not part of the client
  tar -C src --exclude=__pycache__ --exclude=pyscore/server -cf - pyscore | tar -C "$lib" -xf -
done
# the same file for several Pythons (pure-Python libraries, pysam's bundled C libraries): one copy
python3 - "$root/lib" <<'PY'
import hashlib, os, sys
seen = {}
for folder, dirs, files in sorted(os.walk(sys.argv[1])):
    dirs.sort()
    for name in sorted(files):
        path = os.path.join(folder, name)
        with open(path, "rb") as f:
            key = (hashlib.sha256(f.read()).hexdigest(), os.stat(path).st_mode)
        if key in seen:
            os.unlink(path)
            os.link(seen[key], path)
        else:
            seen[key] = path
PY
mkdir -p dist
out=dist/$NAME-dist.tar.gz
tar -C "$STAGE" --sort=name --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner \
  --format=gnu -cf - "$NAME" | gzip -n >"$out.tmp"
mv "$out.tmp" "$out"
echo "$out"
