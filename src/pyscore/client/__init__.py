"""score-client: the researcher's side: download, view, mount, upload."""

import sys

# httpx imports its optional command-line client (click, rich's console, pygments: ~90 ms of
# every score-client start) whenever those happen to be installed. We never use it; a None
# entry makes that import fail fast, and httpx falls back to a stub, as it does without them.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
