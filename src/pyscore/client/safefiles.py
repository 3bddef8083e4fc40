"""How the client writes files: never through a symbolic link, private bookkeeping private.

Object ids are public, so anyone who can write into an output directory could plant
`<out>/.score-client/<id>.part -> ~/.bashrc` and have a download overwrite it. So state lives
in a directory that must be ours and not a link (mode 0700), state files are opened with
O_NOFOLLOW (mode 0600), and finished files are renamed into place through directory
descriptors opened with O_NOFOLLOW, so no link on the way is followed.

Downloaded data itself follows the umask, as curl, wget and the original client do: it is the
user's output, often shared with a group; who may read it is the directory's business.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import sys
from pathlib import Path
from typing import Any, Optional, Union

from pyscore.client.errors import ScoreError, UsageError

NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC


def private_dir(path: Path, what: str = "download state") -> Path:
    """Create `path` (mode 0700) or check that it is a real directory of ours; tighten its
    mode if it is wider. Refuses links and other users' directories."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700, parents=True)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a directory"
        raise UsageError(f"{path} is {kind}; refusing to keep {what} there (remove it)")
    if st.st_uid != os.getuid():
        raise UsageError(
            f"{path} belongs to another user (uid {st.st_uid}); refusing to keep "
            f"{what} there (remove it)"
        )
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(path, 0o700)
    return path


def open_private(
    path: Union[Path, str], flags: int, folder: Optional[int] = None, shown: Optional[Path] = None
) -> int:
    """os.open without following a link at `path` (a name in the directory open as `folder`,
    if given; `shown`: its path, for messages); a new file gets mode 0600."""
    try:
        return os.open(path, flags | NOFOLLOW, 0o600, dir_fd=folder)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ScoreError(
                f"{shown or path} is a symbolic link; refusing to follow it (remove it)"
            ) from None
        raise


def private_dir_fd(path: Path, what: str = "download state") -> int:
    """`private_dir`, then a descriptor of it opened without following a link, for opening
    and renaming files inside it (`open_private`, os.replace with dir_fd)."""
    private_dir(path, what)
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | NOFOLLOW)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):  # replaced since it was checked
            raise UsageError(
                f"{path} is not a real directory; refusing to keep {what} there"
            ) from None
        raise


def open_dir(root: Path, parts: tuple[str, ...]) -> int:
    """A descriptor of root/parts..., creating missing directories, following no link below
    `root` (the user's own choice of directory, which may be one)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for name in parts:
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o777, dir_fd=fd)
            try:
                child = os.open(name, os.O_RDONLY | os.O_DIRECTORY | NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise ScoreError(
                        f"{root.joinpath(*parts)}: {name} is not a real directory (a symbolic "
                        "link or a file); refusing to write through it"
                    ) from None
                raise
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


_SYNCFS: list[Any] = []  # [the C function, or None], resolved on first use


def sync_filesystem(fd: int) -> bool:
    """Make everything written to the file system holding `fd` durable at once: Linux's
    syncfs(2), one journal commit for any number of files, where one fsync each would cost a
    commit each. False where there is no syncfs or it failed (then fsync each file: that
    also tells which of them could not be written)."""
    if not _SYNCFS:
        function = None
        if sys.platform.startswith("linux"):
            try:
                import ctypes

                function = ctypes.CDLL(None, use_errno=True).syncfs
                function.argtypes = [ctypes.c_int]
            except (OSError, AttributeError):
                function = None
        _SYNCFS.append(function)
    function = _SYNCFS[0]
    return function is not None and function(fd) == 0


def write_private(path: Path, data: bytes) -> None:
    """`data` as the file `path` (mode 0600), written to a temporary name, then renamed."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        done = 0
        while done < len(data):
            done += os.write(fd, data[done:])
    finally:
        os.close(fd)
    os.replace(tmp, path)


def umask() -> int:
    """The process's umask, read without changing it where Linux allows."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def data_mode() -> int:
    """The mode a new data file gets from the umask, as with open(..., "w")."""
    return 0o666 & ~umask()
