#!/usr/bin/env bash
# Build the documentation site into site/ (SITE_DIR) with warnings as errors: broken links,
# pages missing from the nav, settings or options without help text. MkDocs and its theme come
# from the `docs` extra (scripts/setup.sh docs); the build fetches nothing from the network.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
pinned() {  # is the docs extra installed at the versions pyproject.toml pins?
  "$VENV/bin/python" - 2>/dev/null <<'PY'
import importlib.metadata, tomllib
extra = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["docs"]
assert all(importlib.metadata.version(n) == v for n, v in (p.split("==") for p in extra))
PY
}
[ -x "$VENV/bin/python" ] && pinned || bash scripts/setup.sh docs
if [ -x "$VENV/bin/ruff" ]; then  # the generator is code too (the test extra brings ruff)
  "$VENV/bin/ruff" check --quiet scripts/docs_reference.py
  "$VENV/bin/ruff" format --check --quiet scripts/docs_reference.py
fi
# (not --quiet: it hides the warnings that --strict counts); the theme's end-of-life notice
# is known (docs/developers/dependencies.md)
NO_MKDOCS_2_WARNING=1 "$VENV/bin/python" -m mkdocs build --strict --site-dir "${SITE_DIR:-site}" "$@"
echo "docs built in ${SITE_DIR:-site}/ (open ${SITE_DIR:-site}/index.html)"
