#!/usr/bin/env bash
# Pin every dependency, with hashes, for every supported Python (3.9 and newer) at once:
#   requirements/lock.txt         pyscore with the `postgres` extra: what the image installs
#   requirements/client-lock.txt  the client's libraries (requirements/client.in), at the same
#                                 versions: what the tarball (scripts/dist.sh) ships
# uv resolves "universally" (one file whose markers pick per Python version); pip-tools
# resolves only for the Python it runs on. Run after changing dependencies; commit the result.
set -euo pipefail
cd "$(dirname "$0")/.."
UV=${UV:-$(command -v uv || echo .venv/bin/uv)}
common=(--universal --python-version 3.9 --generate-hashes --quiet)
"$UV" pip compile pyproject.toml --extra postgres "${common[@]}" -o requirements/lock.txt
"$UV" pip compile requirements/client.in -c requirements/lock.txt "${common[@]}" \
  -o requirements/client-lock.txt
