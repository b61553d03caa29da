"""The object store as a local folder: the same key space as the bucket, atomic puts."""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from castai_focus_dagster.storage.store_base import ObjectNotFound, ObjectStoreError, put_after_version_check

# Temporary files of LocalObjectStore.put live in this folder at the root of the store, outside every
# key a consumer reads (never next to the target inside version=focus-1.3/); list() skips it.
TMP_DIR = ".castai-focus-tmp"
_TMP_SUFFIX = ".tmp"
_LOCK_NAME = "publish.lock"
# A temporary file untouched for this long belongs to a dead writer (a live one writes continuously).
STALE_TMP_SECONDS = 3600
# OS errors that no retry can heal: full disk or quota, read-only or forbidden folder.
_PERMANENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}
_COPY_CHUNK = 1 << 20


class LocalObjectStore:
    """Objects as files under `root`; each put is atomic (temp file in the same folder + os.replace).

    A reader therefore sees either the previous object or the complete new one, never a partial file,
    which is the same guarantee S3 gives for a PUT.
    """

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root).resolve()
        self.tmp_dir = self.root / TMP_DIR

    def __repr__(self) -> str:
        return f"LocalObjectStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts) or parts[0] == TMP_DIR:
            raise ValueError(f"invalid object key {key!r}: empty, absolute, '.'/'..' or temporary segment")
        return self.root.joinpath(*parts)

    def put(self, key: str, data: bytes, content_type: str) -> None:
        self._write(self._path(key), lambda handle: handle.write(data))

    def put_file(self, key: str, source: BinaryIO, content_type: str) -> None:
        self._write(self._path(key), lambda handle: shutil.copyfileobj(source, handle, _COPY_CHUNK))

    def _write(self, path: Path, fill: Callable[[BinaryIO], object]) -> None:
        tmp: str | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.tmp_dir.mkdir(parents=True, exist_ok=True)
            # Same file system as the target (os.replace stays atomic), outside the data tree.
            fd, tmp = tempfile.mkstemp(prefix=f"{path.name}.", suffix=_TMP_SUFFIX, dir=self.tmp_dir)
            with os.fdopen(fd, "wb") as handle:
                fill(handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o644)  # mkstemp creates 0600; published files are meant to be read by others
            for attempt in range(3):
                try:
                    os.replace(tmp, path)
                    break
                except FileNotFoundError:  # a concurrent delete pruned the folder just made empty
                    if attempt == 2:
                        raise
                    path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            if exc.errno in _PERMANENT_ERRNOS:
                raise ObjectStoreError(
                    f"cannot write {path}: {os.strerror(exc.errno or 0)} (errno {exc.errno})", permanent=True
                ) from exc
            raise
        except BaseException:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)

    def version(self, key: str) -> str | None:
        """Inode, size and modification time: every put replaces the file, hence a new inode."""
        try:
            st = self._path(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"

    def put_if(self, key: str, data: bytes, content_type: str, expected: str | None) -> None:
        """Compare and replace under an exclusive lock shared by every process on this host."""
        with self._lock():
            put_after_version_check(self, key, data, content_type, expected)

    @contextmanager
    def _lock(self) -> Iterator[None]:
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        with open(self.tmp_dir / _LOCK_NAME, "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def check_writable(self) -> None:
        """Create the folder and a probe file in it: a read-only or full folder fails here, at start."""
        try:
            self.tmp_dir.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.tmp_dir) as probe:
                probe.write(b"probe")
                probe.flush()
                os.fsync(probe.fileno())
        except OSError as exc:
            raise ObjectStoreError(
                f"LOCAL_OUTPUT_DIR {self.root} is not writable: {os.strerror(exc.errno or 0)} "
                f"(errno {exc.errno})",
                permanent=exc.errno in _PERMANENT_ERRNOS,
            ) from exc

    def remove_stale_temporary(
        self, folders: tuple[str, ...] = (), max_age_seconds: float = STALE_TMP_SECONDS
    ) -> list[str]:
        """Delete temporary files that no writer touched for `max_age_seconds` (a killed run's).

        `folders` (keys ending in "/") are also swept for the hidden `.<name>.<random>.tmp` files that
        older versions wrote next to their targets.
        """
        removed: list[str] = []
        deadline = time.time() - max_age_seconds
        candidates = list(self.tmp_dir.iterdir()) if self.tmp_dir.is_dir() else []
        for folder in folders:
            base = self._path(folder.rstrip("/"))
            if base.is_dir():
                candidates += [p for p in base.iterdir() if p.name.startswith(".")]
        for path in candidates:
            if path.name.endswith(_TMP_SUFFIX) and path.is_file():
                try:
                    if path.stat().st_mtime < deadline:
                        path.unlink()
                        removed.append(str(path))
                except FileNotFoundError:
                    continue
        return removed

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(f"no object at {path}") from None

    def get_file(self, key: str, sink: BinaryIO) -> None:
        path = self._path(key)
        try:
            with path.open("rb") as source:
                shutil.copyfileobj(source, sink, _COPY_CHUNK)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(f"no object at {path}") from None

    def open_file(self, key: str) -> BinaryIO:
        # Objects are replaced, never rewritten in place: the open file stays the version it opened.
        path = self._path(key)
        try:
            return path.open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(f"no object at {path}") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> list[str]:
        """Keys starting with `prefix` (a plain string prefix, as in S3), sorted."""
        folder = prefix.rpartition("/")[0]
        base = self._path(folder) if folder else self.root
        if not base.is_dir():
            return []
        keys = []
        for dirpath, dirnames, filenames in os.walk(base):
            rel = Path(dirpath).relative_to(self.root).as_posix()
            if rel == ".":
                dirnames[:] = [d for d in dirnames if d != TMP_DIR]
            for name in filenames:
                if name.startswith(".") and name.endswith(_TMP_SUFFIX):
                    continue  # a temporary file of an older version, written next to its target
                key = name if rel == "." else f"{rel}/{name}"
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def delete(self, key: str) -> None:
        """Idempotent like S3 DELETE; prunes folders left empty so staging leaves no trace."""
        path = self._path(key)
        path.unlink(missing_ok=True)
        parent = path.parent
        while parent != self.root:
            try:
                parent.rmdir()
            except OSError:  # not empty (or already gone): stop pruning
                break
            parent = parent.parent

    def copy(self, src: str, dst: str) -> None:
        """A hard link where the file system has them, else a byte copy: either way atomic.

        Linking is sound because no object is ever changed in place (every put replaces its file), so
        the two keys can share the file; publishing a day's copies then costs no I/O.
        """
        source, target = self._path(src), self._path(dst)
        if not source.is_file():
            raise ObjectNotFound(f"no object at {source}")
        try:
            self._link(source, target)
        except OSError:  # no hard links here (another device, FAT, some network file systems)
            self._write(target, lambda handle: self.get_file(src, handle))

    def _link(self, source: Path, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.tmp_dir / f"{target.name}.{uuid.uuid4().hex}{_TMP_SUFFIX}"
        os.link(source, tmp)
        try:
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(target.parent)

    def describe(self, key: str) -> str:
        return str(self._path(key))


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
