"""pyscore: a Java-free Overture Score/Song for controlled-access genomics data.

`pyscore.Client` is the library API; `score://` paths open through fsspec. Both, and the
typed errors, are loaded on first use: `import pyscore` loads no HTTP client, pysam, pandas
or fsspec, and nothing of the server.
"""

from __future__ import annotations

TYPE_CHECKING = False

__version__ = "0.1.0"  # the one place the version lives (pyproject reads it from here)

if TYPE_CHECKING:
    from typing import Any

    from pyscore.client.errors import (
        AuthError,
        DiskFullError,
        IntegrityError,
        NotFoundError,
        NotPublishedError,
        ScoreError,
        ServerError,
        SettingError,
        UnreachableError,
        UsageError,
    )
    from pyscore.library.client import Client
    from pyscore.library.fs import ScoreFileSystem
    from pyscore.library.records import AnalysisInfo, FileInfo

__all__ = [
    "AnalysisInfo",
    "AuthError",
    "Client",
    "DiskFullError",
    "FileInfo",
    "IntegrityError",
    "NotFoundError",
    "NotPublishedError",
    "ScoreError",
    "ScoreFileSystem",
    "ServerError",
    "SettingError",
    "UnreachableError",
    "UsageError",
    "__version__",
]
HOMES = {  # where each public name lives; the rest of __all__ are errors
    "Client": "pyscore.library.client",
    "ScoreFileSystem": "pyscore.library.fs",
    "AnalysisInfo": "pyscore.library.records",
    "FileInfo": "pyscore.library.records",
}


def __getattr__(name: str) -> Any:
    """The public names, each imported when first asked for."""
    module = HOMES.get(name, "pyscore.client.errors" if name.endswith("Error") else None)
    if module is None or name not in __all__:
        raise AttributeError(f"module 'pyscore' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
