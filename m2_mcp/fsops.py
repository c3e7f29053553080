"""Descriptor-relative file operations under a repo root: the only way the file tools touch files.

Every directory on the way is opened with O_NOFOLLOW|O_DIRECTORY relative to its parent's
descriptor, starting at the root, so a directory swapped for a symlink mid-call makes the
call fail instead of writing outside the repo. Only regular files are opened (FIFOs,
devices and sockets are refused before any open that could block). Writes go to a short
temp name in the target's own directory, then `rename` it over the target: readers and a
`kill -9` see the old or the new file, never half of one; leftovers are removed at start.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path

from m2_mcp.errors import ToolError

TEMP_SUFFIX = ".m2tmp"
_TEMP_PREFIX = ".m2-"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_KINDS = {stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
          stat.S_IFSOCK: "a socket", stat.S_IFLNK: "a symbolic link", stat.S_IFDIR: "a directory"}


class Missing(ToolError):
    """The file does not exist."""


def kind(mode: int) -> str:
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def _refuse(shown: str, exc: OSError) -> ToolError:
    if exc.errno == errno.ENOENT:
        return Missing(f"file not found: {shown}")
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        return ToolError(f"{shown}: a component of the path is not a directory (or was replaced by a symlink "
                         "while the call ran); nothing was done")
    if exc.errno == errno.ENAMETOOLONG:
        return ToolError(f"{shown}: file name too long (at most 255 bytes per name)")
    return ToolError(f"{shown}: {exc.strerror or exc}")


@contextlib.contextmanager
def open_dir(root: Path, parts: Sequence[str], *, create: bool = False, made: list[Path] | None = None,
             shown: str = "") -> Iterator[int]:
    """A descriptor for root/parts, following no symlink; `create` makes missing directories
    (appended to `made`, outermost first)."""
    fd = os.open(root, _DIR_FLAGS)
    try:
        for i, part in enumerate(parts):
            try:
                try:
                    nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    os.mkdir(part, 0o777, dir_fd=fd)
                    if made is not None:
                        made.append(root.joinpath(*parts[: i + 1]))
                    nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                raise _refuse(shown or "/".join(parts), exc) from None
            os.close(fd)
            fd = nxt
        yield fd
    finally:
        os.close(fd)


def lstat_in(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


@contextlib.contextmanager
def open_regular(root: Path, parts: Sequence[str], shown: str) -> Iterator[tuple[int, os.stat_result]]:
    """An O_RDONLY descriptor (and its fstat) for a regular file; ToolError for anything else."""
    with open_dir(root, parts[:-1], shown=shown) as dfd:
        st = lstat_in(dfd, parts[-1])
        if st is None:
            raise Missing(f"file not found: {shown}")
        if not stat.S_ISREG(st.st_mode):
            raise ToolError(f"{shown} is {kind(st.st_mode)}, not a regular file; refused")
        try:  # O_NONBLOCK: if it was swapped for a FIFO since the lstat, the open still returns at once
            fd = os.open(parts[-1], os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
        except OSError as exc:
            raise _refuse(shown, exc) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ToolError(f"{shown} is {kind(st.st_mode)}, not a regular file; refused")
        os.set_blocking(fd, True)
        yield fd, st
    finally:
        os.close(fd)


def read_bytes(root: Path, parts: Sequence[str], shown: str, cap: int, why: str) -> bytes | None:
    """The whole file (None if it does not exist); ToolError past `cap` bytes, naming `why`."""
    try:
        with open_regular(root, parts, shown) as (fd, st):
            if st.st_size > cap:
                raise ToolError(f"{shown} is {st.st_size} bytes, over the {cap}-byte limit for {why}")
            chunks = []
            size = 0
            while chunk := os.read(fd, 1 << 20):
                size += len(chunk)
                if size > cap:  # grew while we read
                    raise ToolError(f"{shown} is over the {cap}-byte limit for {why}")
                chunks.append(chunk)
            return b"".join(chunks)
    except Missing:
        return None
    except OSError as exc:
        raise _refuse(shown, exc) from None


def _umask() -> int:
    """The process umask, read without changing it (os.umask is not thread-safe to probe)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def write_atomic(root: Path, parts: Sequence[str], data: bytes, shown: str,
                 made: list[Path] | None = None) -> bool:
    """Replace root/parts with `data` (temp file + rename in the same directory, all by descriptor);
    keeps an existing file's mode. Returns True if the file was created."""
    name = parts[-1]
    with open_dir(root, parts[:-1], create=True, made=made, shown=shown) as dfd:
        st = lstat_in(dfd, name)
        if st is not None and not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
            raise ToolError(f"{shown} is {kind(st.st_mode)}; refused")
        mode = stat.S_IMODE(st.st_mode) if st is not None and stat.S_ISREG(st.st_mode) else 0o666 & ~_umask()
        tmp = f"{_TEMP_PREFIX}{secrets.token_hex(6)}{TEMP_SUFFIX}"  # short: any target name up to NAME_MAX works
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dfd)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
                os.fchmod(fd, mode)
            finally:
                os.close(fd)
            os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dfd)
            if isinstance(exc, OSError):
                raise _refuse(shown, exc) from None
            raise
    return st is None


def unlink(root: Path, parts: Sequence[str]) -> None:
    """Remove root/parts (by descriptor; errors ignored): undoing a file this call created."""
    with contextlib.suppress(OSError, ToolError), open_dir(root, parts[:-1]) as dfd:
        os.unlink(parts[-1], dir_fd=dfd)


def clean_temp_files(root: Path) -> int:
    """Remove temp files a killed write left behind (never inside `.git`); returns how many."""
    removed = 0
    for _, dirnames, filenames, dfd in os.fwalk(root):
        dirnames[:] = [d for d in dirnames if d.lower() != ".git"]
        for name in filenames:
            if name.startswith(".") and name.endswith(TEMP_SUFFIX):
                with contextlib.suppress(OSError):
                    st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                    if stat.S_ISREG(st.st_mode):
                        os.unlink(name, dir_fd=dfd)
                        removed += 1
    return removed
