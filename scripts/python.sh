#!/usr/bin/env bash
# Print the path of a Python that pyscore supports (3.9 or newer), looking on PATH (python3.X,
# python3) and among pyenv's versions: the newest by default, the oldest with "oldest", or a
# given minor version ("3.9"). Exits 1, saying what it looked for, if there is none.
set -euo pipefail
want=${1:-newest}
candidates=()
for minor in 13 12 11 10 9; do
  command -v "python3.$minor" >/dev/null && candidates+=("$(command -v "python3.$minor")")
done
command -v python3 >/dev/null && candidates+=("$(command -v python3)")
if command -v pyenv >/dev/null; then
  for p in "$(pyenv root)"/versions/3.*/bin/python; do [ -x "$p" ] && candidates+=("$p"); done
fi
found=$(for p in ${candidates[@]+"${candidates[@]}"}; do
  "$p" -c 'import sys; v = sys.version_info
if v >= (3, 9): print(f"{v[0]}.{v[1]} {v[0]:02d}{v[1]:03d} {sys.executable}")' 2>/dev/null || true
done | sort -u -k2,2n)
case "$want" in
  newest) line=$(tail -n 1 <<<"$found") ;;
  oldest) line=$(head -n 1 <<<"$found") ;;
  *) line=$(awk -v w="$want" '$1 == w' <<<"$found" | head -n 1) ;;
esac
if [ -z "$line" ]; then
  echo "no Python ${want/newest/3.9 or newer} found on PATH or under pyenv;" \
       "install one (pyenv install 3.12, or uv python install 3.12)" >&2
  exit 1
fi
echo "${line##* }"
