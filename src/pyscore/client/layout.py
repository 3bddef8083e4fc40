"""Where downloaded files go (--output-layout), and the guarantee that they stay inside the
output directory whatever names a manifest or server supplies.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

from pyscore.client.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Optional

LAYOUTS = ("filename", "bundle", "id")
UNSAFE = re.compile(r"[\x00-\x1f/\\]")  # a separator, NUL or a control character


def check_sources(
    object_ids: Optional[Sequence[str]],
    manifest: object,
    analysis_id: Optional[str],
    study_id: Optional[str],
) -> None:
    """Exactly one way of naming what to download, and an analysis only with its study."""
    if len([x for x in (manifest, object_ids, analysis_id) if x]) != 1:
        raise UsageError(
            "Give exactly one of --object-id, --manifest, or --analysis-id (with --study-id)"
        )
    if analysis_id and not study_id:
        raise UsageError("--analysis-id needs --study-id (or --program-id)")


def writable_dir(path: Path, option: str = "--output-dir") -> None:
    """Make the directory if it is missing and check a file can be made in it: one line
    before any lookup, rather than the same refusal once per file after all of them."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        if hasattr(os, "O_TMPFILE"):  # Linux: a file without a name, nothing left behind
            try:
                os.close(os.open(path, os.O_TMPFILE | os.O_WRONLY, 0o600))
                return
            except OSError as exc:
                if exc.errno not in (errno.EISDIR, errno.EOPNOTSUPP):  # not on this fs
                    raise
        import tempfile

        with tempfile.TemporaryFile(dir=path):
            return
    except (FileExistsError, NotADirectoryError):
        reason = "it is not a directory"
    except OSError as exc:
        reason = exc.strerror or str(exc)
    raise UsageError(f"cannot write to {option} {path} ({reason})")


def safe_name(name: str, what: str) -> str:
    """A single path component: no separators, no '.', '..', NUL or control characters."""
    if not name or name in (".", "..") or UNSAFE.search(name) or len(name.encode()) > 255:
        raise UsageError(
            f"Refusing {what} {name!r}: it is not a plain file name and could "
            "escape the output directory"
        )
    return name


def target_path(
    output_dir: Path,
    layout: str,
    object_id: str,
    file_name: str,
    analysis_id: str,
    root: Path | None = None,
) -> Path:
    """The final path of an object under `output_dir` (`root`: it resolved already, as
    `Names` does once a run rather than a few lstat calls a file), checked to stay inside it."""
    if layout == "id":
        relative = Path(safe_name(object_id, "object id"))
    elif layout == "bundle":
        relative = Path(safe_name(analysis_id, "analysis id")) / safe_name(file_name, "file name")
    elif layout == "filename":
        relative = Path(safe_name(file_name, "file name"))
    else:
        raise UsageError(f"Unknown output layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    root = root or output_dir.resolve()
    folder = root
    for name in relative.parent.parts:  # safe names: only a link could lead elsewhere
        folder = folder / name
        if folder.is_symlink():
            raise UsageError(
                f"Refusing {file_name!r}: {folder} is a symbolic link and could lead outside "
                f"{output_dir}"
            )
    return root / relative  # a link at the name itself is replaced, never written through


def unique_name(file_name: str, tag: str) -> str:
    """`file_name` made unique by a tag (an object id) after its first part, so that a data
    file and its index keep pairing: same.bam → same.<tag>.bam, same.bam.bai →
    same.<tag>.bam.bai."""
    dot = file_name.find(".", 1)
    if dot < 0:
        return f"{file_name}.{tag}"
    return f"{file_name[:dot]}.{tag}{file_name[dot:]}"


class Names:
    """The final paths claimed so far in one run. A second object wanting a path already
    claimed gets a name made unique by object id (never the first one's file): for an index,
    the id of its data file, so the pair still matches."""

    def __init__(self, output_dir: Path, layout: str) -> None:
        self.output_dir, self.layout = output_dir, layout
        self.root = output_dir.resolve()
        self.owner: dict[Path, str] = {}  # final path → object id
        self.tags: dict[str, str] = {}  # object id → the tag its name was made unique with

    def claim(
        self, object_id: str, file_name: str, analysis_id: str, data_id: str | None = None
    ) -> tuple[Path, str | None]:
        """The object's final path, and a line to say if it is not the plain one."""
        final = target_path(
            self.output_dir, self.layout, object_id, file_name, analysis_id, self.root
        )
        tag = self.tags.get(data_id) if data_id else None
        if tag is None and final not in self.owner:
            self.owner[final] = object_id
            return final, None
        first = self.owner.get(final)
        tag = tag or data_id or object_id
        # the tag (the data file's, for an index), else the object id, else numbered: a name
        # taken by another file, even one literally called so, is never given twice
        tags = [tag, object_id, *(f"{object_id}-{n}" for n in range(2, len(self.owner) + 3))]
        for tag in tags:
            name = unique_name(file_name, tag)
            final = target_path(
                self.output_dir, self.layout, object_id, name, analysis_id, self.root
            )
            if final not in self.owner:
                break
        self.owner[final] = object_id
        self.tags[object_id] = tag
        if first is None:  # the index of a renamed data file
            return final, (
                f"'{file_name}' (object id '{object_id}') is written as '{name}', beside "
                "its data file's unique name"
            )
        return final, (
            f"File '{file_name}' (object id '{object_id}') has the same name as object id "
            f"'{first}'; writing it as '{name}'"
        )
