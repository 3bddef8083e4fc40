"""Where downloaded files go (--output-layout), and the guarantee that they stay inside the
output directory whatever names a manifest or server supplies.
"""

from __future__ import annotations

from pathlib import Path

from pyscore.client.errors import UsageError

LAYOUTS = ("filename", "bundle", "id")


def safe_name(name: str, what: str) -> str:
    """A single path component: no separators, no '.', '..', NUL or control characters."""
    if (
        not name
        or name in (".", "..")
        or "/" in name
        or "\\" in name
        or any(ord(c) < 32 for c in name)
        or len(name.encode()) > 255
    ):
        raise UsageError(
            f"Refusing {what} {name!r}: it is not a plain file name and could "
            "escape the output directory"
        )
    return name


def target_path(
    output_dir: Path, layout: str, object_id: str, file_name: str, analysis_id: str
) -> Path:
    """The final path of an object under `output_dir`, checked to stay inside it."""
    if layout == "id":
        relative = Path(safe_name(object_id, "object id"))
    elif layout == "bundle":
        relative = Path(safe_name(analysis_id, "analysis id")) / safe_name(file_name, "file name")
    elif layout == "filename":
        relative = Path(safe_name(file_name, "file name"))
    else:
        raise UsageError(f"Unknown output layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    root = output_dir.resolve()
    folder = root
    for name in relative.parent.parts:  # safe names: only a link could lead elsewhere
        folder = folder / name
        if folder.is_symlink():
            raise UsageError(
                f"Refusing {file_name!r}: {folder} is a symbolic link and could lead outside "
                f"{output_dir}"
            )
    return root / relative  # a link at the name itself is replaced, never written through
