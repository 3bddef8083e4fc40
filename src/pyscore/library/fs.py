"""`score://`: the platform as a read-only fsspec file system, so pandas, dask, pyarrow,
xarray and universal-pathlib open its files like any other URL.

    score://                           the studies
    score://<study>                    its published analyses
    score://<study>/<analysis>         the analysis's files
    score://<study>/<analysis>/<name>  a file
    score://<object id>                a file, by id

Registered by the `fsspec.specs` entry point (pyproject.toml). Settings are score-client's
(profile, environment, conf files); `storage_options={"profile": ..., "token": ...,
"metadata_url": ..., "storage_url": ...}` override them. Metadata comes from `Client`; bytes
through its block cache, so reads renew signed URLs and read ahead as `Client.open` does.
"""

from __future__ import annotations

import contextlib
import errno
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional

from fsspec.spec import AbstractBufferedFile, AbstractFileSystem

from pyscore.client.blockcache import Readahead, RemoteObject
from pyscore.client.errors import NotFoundError, UsageError
from pyscore.library.client import Client
from pyscore.library.records import FileInfo

READ_ONLY = (
    "score:// is read-only; upload with pyscore.Client.upload/submit or `score-client upload`"
)


def _is_object_id(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text.lower()
    except ValueError:
        return False


class ScoreFileSystem(AbstractFileSystem):  # type: ignore[misc]
    """A Song/Score platform's published files, read-only."""

    protocol = ("score",)
    root_marker = ""

    def __init__(
        self,
        profile: Optional[str] = None,
        token: Optional[str] = None,
        metadata_url: Optional[str] = None,
        storage_url: Optional[str] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.client = Client(
            profile, token=token, metadata_url=metadata_url, storage_url=storage_url
        )

    # -- paths ----------------------------------------------------------------------------
    def _parts(self, path: str) -> list[str]:
        parts = [p for p in self._strip_protocol(path).split("/") if p]
        if any(p in (".", "..") for p in parts):
            raise UsageError(f"score://{'/'.join(parts)}: '.' and '..' are not path parts here")
        return parts

    @contextlib.contextmanager
    def _missing(self, path: str) -> Iterator[None]:
        """The metadata's "not found" as the FileNotFoundError fsspec's callers expect."""
        try:
            yield
        except NotFoundError as exc:
            raise FileNotFoundError(errno.ENOENT, str(exc), path) from exc

    @staticmethod
    def _file_entry(name: str, f: FileInfo) -> dict[str, Any]:
        return {
            "name": name,
            "type": "file",
            "size": f.size,
            "md5": f.md5,
            "object_id": f.object_id,
            "index_object_id": f.index_object_id,
            "study": f.study,
            "analysis": f.analysis,
            "access": f.access,
        }

    def _listing(self, parts: list[str]) -> list[dict[str, Any]]:
        key = "/".join(parts)
        if key in self.dircache:
            return list(self.dircache[key])
        with self._missing(key):
            if not parts:
                found = [{"name": s, "type": "directory", "size": 0} for s in self.client.studies()]
            elif len(parts) == 1:
                found = [
                    {
                        "name": f"{parts[0]}/{a.analysis_id}",
                        "type": "directory",
                        "size": 0,
                        "analysis_type": a.analysis_type,
                        "published_at": a.published_at,
                    }
                    for a in self.client.analyses(parts[0])
                ]
            elif len(parts) == 2:
                analysis = self.client.analysis(parts[0], parts[1])
                if analysis.state != "PUBLISHED":
                    raise FileNotFoundError(
                        errno.ENOENT, f"analysis {parts[1]} is {analysis.state}", key
                    )
                found = [self._file_entry(f"{key}/{f.name}", f) for f in analysis.files]
            else:
                raise FileNotFoundError(errno.ENOENT, "no such directory", key)
        self.dircache[key] = found
        return list(found)

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        parts = self._parts(path)
        if (len(parts) == 1 and _is_object_id(parts[0])) or len(parts) == 3:
            entries = [self.info(path)]
        else:
            entries = self._listing(parts)
        return entries if detail else [e["name"] for e in entries]

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        parts = self._parts(path)
        key = "/".join(parts)
        if not parts:
            return {"name": "", "type": "directory", "size": 0}
        if len(parts) == 1 and _is_object_id(parts[0]):
            with self._missing(key):
                return self._file_entry(parts[0].lower(), self.client.file(parts[0]))
        if len(parts) > 3:
            raise FileNotFoundError(errno.ENOENT, "no such file", key)
        for entry in self._listing(parts[:-1]):
            if entry["name"] == key:
                return entry
        raise FileNotFoundError(errno.ENOENT, "no such file or directory", key)

    def ukey(self, path: str) -> str:
        """The file's MD5: what `filecache::` compares to know a cached copy is current."""
        return str(self.info(path)["md5"])

    def checksum(self, path: str) -> int:
        return int(self.ukey(path) or "0", 16)

    # -- bytes ----------------------------------------------------------------------------
    def _remote(self, path: str) -> RemoteObject:
        entry = self.info(path)
        if entry["type"] != "file":
            raise IsADirectoryError(errno.EISDIR, "a directory", path)
        with self._missing(path):
            return self.client.remote(entry["object_id"])

    def _open(
        self,
        path: str,
        mode: str = "rb",
        block_size: Optional[int] = None,
        autocommit: bool = True,
        cache_options: Optional[dict[str, Any]] = None,
        **kwargs: Any,
    ) -> ScoreFile:
        if mode != "rb":
            raise PermissionError(errno.EROFS, READ_ONLY, path)
        return ScoreFile(self, path, self._remote(path), block_size, cache_options, **kwargs)

    def cat_file(
        self, path: str, start: Optional[int] = None, end: Optional[int] = None, **kwargs: Any
    ) -> bytes:
        obj = self._remote(path)
        first = 0 if start is None else start if start >= 0 else max(obj.size + start, 0)
        last = obj.size if end is None else end if end >= 0 else max(obj.size + end, 0)
        return self.client.blocks.read(obj, first, last - first)

    def cat_ranges(
        self,
        paths: list[str],
        starts: Any,
        ends: Any,
        max_gap: Optional[int] = None,
        on_error: str = "return",
        **kwargs: Any,
    ) -> list[Any]:
        """Many ranges at once (the block cache's fetchers run them side by side)."""
        count = len(paths)
        starts = starts if isinstance(starts, list) else [starts] * count
        ends = ends if isinstance(ends, list) else [ends] * count
        if len(starts) != count or len(ends) != count:
            raise ValueError("paths, starts and ends differ in length")

        def one(args: tuple[str, Optional[int], Optional[int]]) -> Any:
            try:
                return self.cat_file(*args)
            except Exception as exc:
                if on_error == "return":
                    return exc
                raise

        with ThreadPoolExecutor(max(1, min(self.client.settings.parallel, count))) as pool:
            return list(pool.map(one, zip(paths, starts, ends)))

    # -- writes: refused ------------------------------------------------------------------
    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise PermissionError(errno.EROFS, READ_ONLY)

    mkdir = makedirs = rm = rm_file = rmdir = _rm = cp_file = put_file = _refuse
    touch = pipe_file = mv = _refuse


class ScoreFile(AbstractBufferedFile):  # type: ignore[misc]
    """An open score:// file: each read goes to the block cache (fsspec's own cache is
    off: the block cache already keeps and reads ahead)."""

    def __init__(
        self,
        fs: ScoreFileSystem,
        path: str,
        obj: RemoteObject,
        block_size: Optional[int],
        cache_options: Optional[dict[str, Any]],
        **kwargs: Any,
    ) -> None:
        self.obj = obj
        self.ahead = Readahead()
        kwargs.pop("cache_type", None)
        super().__init__(
            fs,
            path,
            "rb",
            block_size or "default",
            cache_type="none",
            cache_options=cache_options,
            size=obj.size,
            **kwargs,
        )

    def _fetch_range(self, start: int, end: int) -> bytes:
        size = end - start
        data: bytes = self.fs.client.blocks.read(
            self.obj, start, size, self.ahead.advise(start, size)
        )
        return data
