"""`mount`: the repository as a read-only FUSE file system.

The tree is what the token may read. A pyscore storage service says it in one request: its
listing names only what the token may read, and (`names=true`) names each file too. With
the original's, objects in the storage listing are named through the metadata entities;
objects the metadata knows but the listing does not are left out with a warning instead of
breaking the mount (the original's score issue #312). The original's listing also names
objects nobody may read yet (unpublished analyses) and objects of studies this token may
not read; those are left out too (the metadata's unpublished analyses, one access probe per
study), so no file in the tree fails with EIO on its first read. Reads go through
blockcache.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from pyscore.client.api import Api
from pyscore.client.blockcache import (
    BlockStore,
    DiskLRU,
    Readahead,
    RemoteObject,
    block_store,
    default_cache_dir,
)
from pyscore.client.download import parallel_map
from pyscore.client.errors import EXIT_FAILED, AuthError, ScoreError, UsageError
from pyscore.client.layout import safe_name
from pyscore.client.safefiles import open_private, private_dir
from pyscore.wire.song import Entity

os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")  # mfusepy reads this at import
REFRESH_SECONDS = 300.0
HIDDEN_NAMED = 100  # files left out named one warning each; the rest counted in one line
# The original always adds these; kernel caching is safe because objects never change.
FUSE_DEFAULTS = {
    "ro": True,
    "kernel_cache": True,
    "entry_timeout": 3600,
    "attr_timeout": 3600,
    "negative_timeout": 60,
    "fsname": "score-client",
    "subtype": "score",
}
KERNEL_READAHEAD = 1024 * 1024  # as the original asks for; set at init (libfuse3 has no -o)


class Listed(msgspec.Struct, gc=False):
    """What the mount keeps of a /listing row. A million of them: a Struct (no __dict__,
    not tracked by the garbage collector) decoded straight from the JSON."""

    id: str
    size: int
    lastModified: int  # epoch ms


class NamedListed(msgspec.Struct, gc=False):
    """A row of a pyscore /listing asked with `names=true`: the object and the file it is
    (a Listed and a Named in one). A pyscore from before `names` leaves the names empty."""

    id: str
    size: int
    lastModified: int
    gnosId: str = ""
    fileName: str = ""


class Named(msgspec.Struct, gc=False):
    """What the mount keeps of an entity: the fields that name a file and say who may read it."""

    id: str
    gnosId: str
    fileName: str
    projectCode: str
    access: str


class Node(msgspec.Struct, gc=False):
    """A directory or a file of the tree: one per file, so a Struct (made in C, no __dict__)
    the garbage collector does not track (the tree has no cycles: walking a million nodes
    again and again took a third of the build, and would pause reads). A file's `children`
    is NO_CHILDREN, shared (files never get children)."""

    name: str
    is_dir: bool
    size: int = 0
    mtime: float = 0.0
    object_id: str | None = None
    children: dict[str, Node] = msgspec.field(default_factory=dict)


NO_CHILDREN: dict[str, Node] = {}


@dataclass
class Tree:
    root: Node
    files: int = 0
    bytes: int = 0  # the files' sizes summed (statfs: `df` is not a walk of a million nodes)
    hidden: list[str] = field(default_factory=list)  # the first HIDDEN_NAMED left out
    more_hidden: int = 0  # and how many after them (a one-study token: the rest of a platform)

    def hide(self, why: str) -> None:
        if len(self.hidden) < HIDDEN_NAMED:
            self.hidden.append(why)
        else:
            self.more_hidden += 1

    @property
    def left_out(self) -> int:
        return len(self.hidden) + self.more_hidden

    def lookup(self, path: str) -> Node | None:
        node = self.root
        for part in path.strip("/").split("/"):
            if not part:
                continue
            child = node.children.get(part)
            if child is None:
                return None
            node = child
        return node


def joined(
    entities: Iterable[Named], listing: Mapping[str, Listed | NamedListed]
) -> Iterator[tuple[Named, Listed | NamedListed | None]]:
    """Each entity with its listing row (None: the listing does not name it)."""
    found_in = listing.get
    return ((e, found_in(e.id)) for e in entities)


def build_tree(
    rows: Iterable[tuple[Named | NamedListed, Listed | NamedListed | None]], layout: str
) -> Tree:
    """The directory tree from (name, listing row) pairs: an entity's names, and the size,
    mtime and readability its listing row says (None: not listed, left out). Two files of
    one name in a folder: the one with the smaller object id is shown."""
    root = Node("", True, mtime=time.time())
    tree = Tree(root)
    hide = tree.hide
    parents: dict[str, Node] = {}  # an analysis id → its folder (its name checked once)
    for e, found in rows:
        if found is None:
            hide(f"{e.fileName} ({e.id})")
            continue
        mtime = found.lastModified / 1000
        try:
            if layout == "object-id":
                parent, name = root, safe_name(e.id, "object id")
            else:
                parent = parents.get(e.gnosId)  # type: ignore[assignment]
                if parent is None:
                    folder = safe_name(e.gnosId, "analysis id")
                    parent = parents[e.gnosId] = root.children[folder] = Node(folder, True)
                if mtime > parent.mtime:
                    parent.mtime = mtime
                name = safe_name(e.fileName, "file name")
        except UsageError:
            hide(f"{e.fileName!r} ({e.id}): unsafe name")
            continue
        shown = parent.children.get(name)
        if shown is not None:
            if (shown.object_id or "") < e.id:
                hide(f"{e.fileName} ({e.id}): duplicate name")
                continue
            hide(f"{e.fileName} ({shown.object_id}): duplicate name")
            tree.files -= 1
            tree.bytes -= shown.size
        parent.children[name] = Node(name, False, found.size, mtime, e.id, NO_CHILDREN)
        tree.files += 1
        tree.bytes += found.size
    return tree


def unreadable(api: Api, entities: list[Named], warn) -> dict[str, str]:
    """Listed objects a read would refuse, object id → why: files of analyses the metadata
    calls unpublished, and controlled files of studies where one probe (a signed URL for one
    of them) is refused to this token. When the metadata cannot say, files stay (a read
    error then says why)."""

    def unpublished_in(study: str) -> tuple[str, set[str] | ScoreError]:
        try:
            return study, api.unpublished_analyses(study)
        except ScoreError as exc:
            return study, exc

    unpublished: set[str] = set()
    for found in parallel_map(unpublished_in, sorted({e.projectCode for e in entities})):
        if isinstance(found, ScoreError):  # not raised: unpublished_in keeps it
            continue
        study, answer = found
        if isinstance(answer, ScoreError):
            warn(f"cannot tell which analyses of study {study} are unpublished: {answer}")
        else:
            unpublished |= answer
    why = {e.id: "unpublished" for e in entities if e.gnosId in unpublished}
    probes: dict[str, str] = {}
    for e in entities:
        if e.access == "controlled" and e.id not in why:
            probes.setdefault(e.projectCode, e.id)

    def refused(study: str) -> tuple[str, bool]:
        try:
            api.download_spec(probes[study], external=True)
        except AuthError:
            return study, True
        except ScoreError:
            pass
        return study, False

    denied = {
        found[0]
        for found in parallel_map(refused, list(probes))
        if not isinstance(found, ScoreError) and found[1]
    }
    for e in entities:
        if e.access == "controlled" and e.projectCode in denied and e.id not in why:
            why[e.id] = f"this token may not read study {e.projectCode}"
    return why


def listing_is_readable(api: Api) -> bool:
    """Whether the storage service's /listing names only what this token may read: pyscore's
    (objects of published analyses, open or of a study the token may read) does, and says it
    is pyscore on every answer (its batch header); the original's names every object."""
    return api.batch_offer(api.settings.storage_url)[1] is not None


def named(api: Api, wanted: set[str] | None) -> list[Named]:
    """The entities the tree is made of: every one, or those of a manifest and their index
    files. Strings that repeat (analysis, study, access) are shared, not one per file."""
    if wanted is None:
        rows: list[Named] = []
        for e in api.entities_as(Named, Named.__struct_fields__):
            e.gnosId, e.projectCode = sys.intern(e.gnosId), sys.intern(e.projectCode)
            e.access = sys.intern(e.access)
            rows.append(e)
        return rows
    entities = [e for e in (_entity_or_none(api, i) for i in sorted(wanted)) if e]
    seen = {e.id for e in entities}
    for one in list(entities):  # each row's own index file sits beside it
        index = api.index_entity(one)
        if index is not None and index.id not in seen:
            entities.append(index)
            seen.add(index.id)
    return [Named(e.id, e.gnosId, e.fileName, e.projectCode, e.access) for e in entities]


def lists_readable(api: Api) -> bool:
    """`listing_is_readable`, the storage service first asked something small to learn what
    it is (unless known already)."""
    if not api.batch_offer(api.settings.storage_url)[0]:
        with contextlib.suppress(ScoreError):
            api.ping_url()
    return listing_is_readable(api)


def fetch_tree(api: Api, layout: str, wanted: set[str] | None, warn) -> Tree:
    """The tree: from a pyscore storage service's listing with names (what the token may
    read, each file named: one request, beside a count of the metadata's files for what is
    left out), or else the listing and the entities, asked side by side; what the listing
    names but the token may not read is left out (checked only where the listing may name
    such objects: the original's)."""
    if wanted is None and lists_readable(api):
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(1) as pool:
            count = pool.submit(api.entity_count)
            rows = api.listing_as(NamedListed, names=True)
            if not rows or rows[0].fileName:
                tree = build_tree(((r, r) for r in rows), layout)
                with contextlib.suppress(ScoreError):
                    tree.more_hidden += max(0, (count.result() or 0) - len(rows))
                return tree
        # a pyscore from before `names`: its rows are the listing, the entities name them
        return build_tree(joined(named(api, None), {r.id: r for r in rows}), layout)
    return _fetch_joined(api, layout, wanted, warn)


def _fetch_joined(api: Api, layout: str, wanted: set[str] | None, warn) -> Tree:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        listed = pool.submit(lambda: {e.id: e for e in api.listing_as(Listed)})
        failed: ScoreError | None = None
        try:
            entities = named(api, wanted)
        except ScoreError as exc:
            entities, failed = [], exc
        listing = listed.result()  # its failure first, as when it was asked first
    if failed is not None:
        raise failed
    why: dict[str, str] = {}
    if not listing_is_readable(api):
        why = unreadable(api, [e for e in entities if e.id in listing], warn)
    tree = build_tree(
        joined([e for e in entities if e.id not in why] if why else entities, listing), layout
    )
    for e in entities:
        if e.id in why:
            tree.hide(f"{e.fileName} ({e.id}): {why[e.id]}")
    return tree


def _entity_or_none(api: Api, object_id: str) -> Entity | None:
    try:
        return api.entity(object_id)
    except ScoreError:
        return None


def check_mount_point(path: Path) -> None:
    try:
        st = path.stat()
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:
            raise UsageError(
                f"{path} is a stale mount (transport endpoint not connected); "
                f"run 'fusermount3 -u {path}' first"
            ) from None
        raise UsageError(f"Mount point {path} does not exist") from None
    if not stat.S_ISDIR(st.st_mode):
        raise UsageError(f"Mount point {path} is not a directory")
    if os.path.ismount(path):
        raise UsageError(f"{path} is already a mount point; unmount it first")
    if any(path.iterdir()):
        raise UsageError(f"Mount point {path} is not empty")
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"Mount point {path} is not writable by you")


def parse_options(text: str | None) -> dict[str, object]:
    out: dict[str, object] = {}
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        key, _, value = item.partition("=")
        out[key.strip()] = value.strip() if value else True
    return out


def make_operations(
    api: Api, blocks: BlockStore, layout: str, wanted: set[str] | None, cache_metadata: bool, warn
):
    import mfusepy as fuse

    class ScoreFS(fuse.Operations):
        use_ns = True

        def __init__(self) -> None:
            self.tree = fetch_tree(api, layout, wanted, warn)
            self.loaded = time.monotonic()
            self.guard = threading.Lock()  # not `lock`: that name is a FUSE callback
            self.handles: dict[int, tuple[RemoteObject, Readahead]] = {}
            self.listings: dict[int, list[str]] = {}  # an open directory's entries
            self.next_fh = 1
            self.objects: dict[str, RemoteObject] = {}
            for line in self.tree.hidden:
                warn(f"left out of the mount (unpublished, not readable, or unsafe): {line}")
            if self.tree.more_hidden:
                warn(
                    f"left out of the mount: {self.tree.more_hidden:,} "
                    f"{'more ' if self.tree.hidden else ''}files "
                    "(unpublished, not readable with this token, or unsafe names)"
                )

        def init_with_config(self, conn, config) -> None:
            if conn is not None:  # let the kernel read ahead further, in parallel requests
                conn.max_readahead = KERNEL_READAHEAD
                conn.max_background = max(conn.max_background, 32)

        def _tree(self) -> Tree:
            if not cache_metadata and time.monotonic() - self.loaded > REFRESH_SECONDS:
                try:
                    fresh = fetch_tree(api, layout, wanted, warn)
                    with self.guard:
                        self.tree, self.loaded = fresh, time.monotonic()
                except ScoreError as exc:
                    warn(f"could not refresh the listing ({exc}); keeping the old one")
                    self.loaded = time.monotonic()
            return self.tree

        def _node(self, path: str) -> Node:
            node = self._tree().lookup(path)
            if node is None:
                raise fuse.FuseOSError(errno.ENOENT)
            return node

        def getattr(self, path: str, fh: int | None = None) -> dict:
            node = self._node(path)
            ns = int(node.mtime * 1e9)
            common = {
                "st_uid": os.getuid(),
                "st_gid": os.getgid(),
                "st_atime": ns,
                "st_mtime": ns,
                "st_ctime": ns,
            }
            if node.is_dir:
                return {**common, "st_mode": stat.S_IFDIR | 0o555, "st_nlink": 2, "st_size": 0}
            return {
                **common,
                "st_mode": stat.S_IFREG | 0o444,
                "st_nlink": 1,
                "st_size": node.size,
                "st_blocks": -(-node.size // 512),
                "st_blksize": 1024 * 1024,
            }

        def _entries(self, path: str) -> list[str]:
            node = self._node(path)
            if not node.is_dir:
                raise fuse.FuseOSError(errno.ENOTDIR)
            return [".", "..", *sorted(node.children)]

        def opendir(self, path: str) -> int:
            """A directory's entries, sorted once as it is opened (and as they were then,
            however the tree is refreshed while it is read), then read a buffer at a time
            from an offset. Handed to libfuse whole (`readdir`), they were a list it walked
            from its start for every buffer: an `ls` of 485,000 folders took 9 s."""
            entries = self._entries(path)
            with self.guard:
                fh = self.next_fh
                self.next_fh += 1
                self.listings[fh] = entries
            return fh

        def readdir_with_offset(self, path: str, offset: int, fh: int):
            entries = self.listings.get(fh)
            if entries is None:  # not opened through opendir
                entries = self._entries(path)
            return ((entries[i], None, i + 1) for i in range(offset, len(entries)))

        def releasedir(self, path: str, fh: int) -> int:
            with self.guard:
                self.listings.pop(fh, None)
            return 0

        def open(self, path: str, flags: int) -> int:
            node = self._node(path)
            if node.is_dir:
                raise fuse.FuseOSError(errno.EISDIR)
            if flags & (os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_TRUNC):
                raise fuse.FuseOSError(errno.EROFS)
            with self.guard:
                obj = self.objects.get(node.object_id or "")
                if obj is None:
                    obj = self.objects[node.object_id or ""] = RemoteObject(
                        node.object_id or "", node.size
                    )
                fh = self.next_fh
                self.next_fh += 1
                self.handles[fh] = (obj, Readahead())
            return fh

        def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
            obj, ahead = self.handles[fh]
            try:
                return blocks.read(obj, offset, size, ahead.advise(offset, size))
            except ScoreError as exc:
                warn(f"read of {path} at {offset} failed: {exc}")
                raise fuse.FuseOSError(errno.EIO) from None

        def release(self, path: str, fh: int) -> int:
            with self.guard:
                self.handles.pop(fh, None)
            return 0

        def statfs(self, path: str) -> dict:
            tree = self._tree()
            return {
                "f_bsize": 1024 * 1024,
                "f_frsize": 1024 * 1024,
                "f_blocks": -(-tree.bytes // (1024 * 1024)),
                "f_bfree": 0,
                "f_bavail": 0,
                "f_files": tree.files,
                "f_ffree": 0,
                "f_namemax": 255,
            }

        # A read-only file system says so, rather than "function not implemented".
        def _readonly(self, *args: object) -> int:
            raise fuse.FuseOSError(errno.EROFS)

        create = write = truncate = unlink = mkdir = rmdir = rename = chmod = chown = symlink = (
            link
        ) = utimens = _readonly

    return ScoreFS()


def mount(
    api: Api,
    mount_point: Path,
    layout: str,
    wanted: set[str] | None,
    cache_metadata: bool,
    options: dict[str, object],
    memory_cache: int,
    disk_cache: Path | None,
    disk_cache_size: int,
    warn,
    info,
) -> None:
    """Mount in the foreground until unmounted (fusermount3 -u) or interrupted."""
    import mfusepy as fuse

    check_mount_point(mount_point)

    disk = DiskLRU(disk_cache, disk_cache_size) if disk_cache else None
    blocks = block_store(api, memory_cache, disk)
    operations = make_operations(api, blocks, layout, wanted, cache_metadata, warn)
    info(
        f"Mounting {operations.tree.files} files at {mount_point} (read-only); "
        f"unmount with 'fusermount3 -u {mount_point}' or Ctrl-C"
    )
    kwargs = {**FUSE_DEFAULTS, **options}
    try:
        fuse.FUSE(operations, str(mount_point), foreground=True, **kwargs)
    except RuntimeError as exc:
        # libfuse3's fuse_main returns non-zero when a signal (SIGINT, SIGTERM) ended it,
        # after unmounting: that is the normal way to stop a foreground mount.
        if os.path.ismount(mount_point):
            raise ScoreError(f"the FUSE mount at {mount_point} failed (libfuse: {exc})") from None
    finally:
        blocks.close()
        s = blocks.stats
        info(
            f"Unmounted {mount_point}: {s.requests} requests, {s.bytes:,} bytes fetched, "
            f"{s.hits} cache hits"
        )


def daemon_failure(log_path: Path, code: int) -> ScoreError:
    """The background mount's own failure, as the foreground one would have said it: its
    last line (without its 'score-client: error: ') and its exit code."""
    lines = log_path.read_text(errors="replace").strip().splitlines()
    said = lines[-1].removeprefix("score-client: error: ") if lines else ""
    error = ScoreError(said or f"the mount process exited with code {code}; see {log_path}")
    error.exit_code = code if code > 0 else EXIT_FAILED
    return error


def daemonize(argv: list[str], mount_point: Path, timeout: float = 60.0) -> Path:
    """Run the mount in a detached child; return (its log's path) once it is mounted."""
    child_args = [a for a in argv if a != "--daemonize"]
    logs = private_dir(default_cache_dir().parent / "mount-logs", "mount logs")
    name = str(mount_point.resolve()).strip("/").replace("/", "_") or "root"
    log_path = logs / f"{name}.log"
    with os.fdopen(open_private(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pyscore.client.cli", *child_args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.ismount(mount_point):
            return log_path
        if proc.poll() is not None:
            raise daemon_failure(log_path, proc.returncode)
        time.sleep(0.05)
    proc.kill()
    raise ScoreError(f"{mount_point} was not mounted within {timeout:.0f} s; see {log_path}")
