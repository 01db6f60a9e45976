from __future__ import annotations

import errno
import io
import os
import posixpath
import shutil
import stat
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import fsspec  # type: ignore[import-untyped]
from fsspec.implementations.local import LocalFileSystem  # type: ignore[import-untyped]

from plinth.errors import Conflict, InvalidArgument, NotFound, PlinthError, Unavailable

MAX_PATH_LENGTH = 1024
# File systems take names of 255 bytes; a write's temporary name adds 45 to its file's.
MAX_NAME_BYTES = 200
_TMP_SUFFIX = ".plinth-tmp"
_Step = Callable[[], Any]
_Guard = Callable[[], AbstractContextManager[None]]  # maps storage errors to Plinth errors


def safe_relpath(path: str, *, allow_root: bool = False) -> str:
    def refuse(reason: str) -> InvalidArgument:
        return InvalidArgument(f"artifact path {path!r} is not allowed: {reason}")

    if not isinstance(path, str):
        raise refuse("it must be a string")
    if allow_root and path in ("", "."):
        return ""
    if not path:
        raise refuse("it is empty; give a relative path such as 'model/model.pkl'")
    if len(path) > MAX_PATH_LENGTH:
        raise refuse(f"it is longer than {MAX_PATH_LENGTH} characters")
    if "\\" in path:
        raise refuse("it contains a backslash; use '/' as separator")
    if any(ord(c) < 32 or ord(c) == 127 for c in path):
        raise refuse("it contains a NUL or control character")
    if not path.isascii():
        try:
            path.encode()
        except UnicodeEncodeError:
            raise refuse("it is not valid Unicode text (a lone surrogate)") from None
    if path.startswith("/"):
        raise refuse("it is absolute; give a path relative to the artifact root")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise refuse("it contains a '..' component")
    if long := next((p for p in parts if len(p.encode()) > MAX_NAME_BYTES), None):
        raise refuse(
            f"its part {long[:20]!r}... has {len(long.encode())} bytes; the most is {MAX_NAME_BYTES}"
        )
    if not parts:
        raise refuse("it names the artifact root itself")
    if parts[-1].endswith(_TMP_SUFFIX):  # the name of a write in flight, never listed
        raise refuse(f"names ending in {_TMP_SUFFIX!r} are kept for writes in flight")
    return "/".join(parts)


@dataclass(frozen=True)
class ArtifactInfo:
    path: str
    is_dir: bool
    size: int | None


class _AtomicWriter(io.BufferedWriter):
    """A write that shows up only when closed without error; an error inside `with` drops it."""

    def __init__(self, raw: io.RawIOBase, commit: _Step, abort: _Step, guard: _Guard) -> None:
        super().__init__(raw)
        self._commit, self._abort, self._guard, self._failed = commit, abort, guard, False

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: object, tb: TracebackType | None
    ) -> None:
        self._failed = self._failed or exc_type is not None
        self.close()

    def discard(self) -> None:
        """Close without publishing (an upload that broke off keeps the previous content)."""
        self._failed = True
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        with self._guard():
            try:
                if not self._failed:
                    self.flush()
            except BaseException:
                self._failed = True
                raise
            finally:
                try:
                    (self._abort if self._failed else self._commit)()
                finally:
                    self.raw.close()


class _FsspecSink(io.RawIOBase):
    def __init__(self, file: Any, guard: _Guard) -> None:
        self.file, self.guard = file, guard

    def writable(self) -> bool:
        return True

    def write(self, b: Any, /) -> int:
        with self.guard():  # a full block is uploaded right here
            return int(self.file.write(b))


def _nothing() -> None:
    pass


def _local_writer(final: str, guard: _Guard, check: _Step = _nothing) -> _AtomicWriter:
    if os.path.isdir(final):
        raise IsADirectoryError(final)  # fail before the caller streams the content
    parent, name = os.path.split(final)
    tmp = os.path.join(parent, f".{name}.{uuid.uuid4().hex}{_TMP_SUFFIX}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    os.makedirs(parent, exist_ok=True)
    try:
        raw = io.FileIO(os.open(tmp, flags, 0o666), "wb")
    except FileNotFoundError:  # a concurrent delete pruned the parent we just made
        os.makedirs(parent, exist_ok=True)
        raw = io.FileIO(os.open(tmp, flags, 0o666), "wb")

    def abort() -> None:
        with suppress(FileNotFoundError):
            os.unlink(tmp)

    def commit() -> None:
        try:
            check()
            os.fsync(raw.fileno())
            os.replace(tmp, final)
        except BaseException:
            abort()
            raise

    return _AtomicWriter(raw, commit, abort, guard)


def _open_local_read(full: str, rel: str) -> BinaryIO:
    try:
        fd = os.open(full, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as e:
        if e.errno != errno.ELOOP:
            raise
        raise InvalidArgument(
            f"artifact path {rel!r} is not allowed: it is a symbolic link"
        ) from None
    if stat.S_ISDIR(os.fstat(fd).st_mode):
        os.close(fd)
        raise IsADirectoryError(rel)
    return open(fd, "rb")


def _object_writer(file: Any, guard: _Guard, check: _Step = _nothing) -> _AtomicWriter:
    def abort() -> None:
        file.discard()  # drops a started multipart upload; nothing was published yet
        file.closed = True  # close() would upload the partial content

    def commit() -> None:
        try:
            check()
        except BaseException:
            abort()
            raise
        file.close()

    return _AtomicWriter(_FsspecSink(file, guard), commit, abort, guard)


def _is_storage_error(exc: BaseException) -> bool:
    # botocore is loaded only when an S3 store is in use; never import it just to check
    botocore_exceptions = sys.modules.get("botocore.exceptions")
    return isinstance(exc, OSError) or (
        botocore_exceptions is not None and isinstance(exc, botocore_exceptions.BotoCoreError)
    )


class ArtifactStore:
    def __init__(self, root_uri: str, storage_options: dict[str, Any] | None = None) -> None:
        options = dict(storage_options or {})
        if fsspec.core.split_protocol(root_uri)[0] in ("s3", "s3a"):
            endpoint = os.environ.get("PLINTH_S3_ENDPOINT_URL")
            client_kwargs = dict(options.get("client_kwargs") or {})
            if endpoint and "endpoint_url" not in options and "endpoint_url" not in client_kwargs:
                options["client_kwargs"] = {**client_kwargs, "endpoint_url": endpoint}
            # other processes write to the same bucket: a cached listing would go stale
            options.setdefault("use_listings_cache", False)
        self._fs, root = fsspec.core.url_to_fs(root_uri, **options)
        self._root: str = root.rstrip("/")
        self._local = isinstance(self._fs, LocalFileSystem)

    def _full(self, rel: str) -> str:
        return f"{self._root}/{rel}" if rel else (self._root or "/")

    def _refuse_links(self, rel: str) -> None:
        # A link under the root would let a path read or write outside it: none is followed,
        # whether it is the file itself or a folder on the way (the root itself may be one).
        if not self._local:
            return
        current = self._root
        for part in rel.split("/") if rel else []:
            current = f"{current}/{part}"
            try:
                mode = os.lstat(current).st_mode
            except (FileNotFoundError, NotADirectoryError):
                return  # nothing further exists to be a link
            if stat.S_ISLNK(mode):
                linked = current[len(self._root) + 1 :]
                raise InvalidArgument(
                    f"artifact path {rel!r} is not allowed: {linked!r} is a symbolic link, "
                    "and the artifact store never follows links"
                )

    @contextmanager
    def _errors(self, rel: str, *, writing: bool = False) -> Iterator[None]:
        try:
            yield
        except PlinthError:
            raise
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError, FileExistsError) as e:
            where = f"{rel!r} in {self.uri()}"
            if not writing:
                raise NotFound(f"no artifact file {where}") from e
            if isinstance(e, FileNotFoundError):  # e.g. the bucket does not exist
                raise Unavailable(f"cannot store {where}: {e}", "the artifact store") from e
            raise Conflict(f"cannot store {where}: a file and a folder would share a name") from e
        except Exception as e:
            if not _is_storage_error(e):
                raise
            if isinstance(e, OSError) and e.errno == errno.ENAMETOOLONG:
                raise InvalidArgument(
                    f"artifact path {rel!r} is too long for the artifact store"
                ) from None
            raise Unavailable(
                f"artifact storage failed on {rel!r} in {self.uri()}: {e}", "the artifact store"
            ) from e

    def uri(self, path: str = "") -> str:
        return str(self._fs.unstrip_protocol(self._full(safe_relpath(path, allow_root=True))))

    def open_write(self, dest: str, check: Callable[[], object] = _nothing) -> BinaryIO:
        # Atomic on both kinds of backend: local files go to a temp file renamed on close;
        # object stores publish a key only when its upload completes. ``check`` runs right
        # before publishing: raising there drops the write (e.g. the path became read-only).
        rel = safe_relpath(dest)

        def guard() -> AbstractContextManager[None]:  # errors at write and close map the same
            return self._errors(rel, writing=True)

        with guard():
            self._refuse_links(rel)
            if self._local:
                return _local_writer(self._full(rel), guard, check)
            return _object_writer(self._fs.open(self._full(rel), "wb"), guard, check)

    def open_read(self, path: str) -> BinaryIO:
        rel = safe_relpath(path)
        with self._errors(rel):
            self._refuse_links(rel)
            if self._local:  # O_NOFOLLOW: a link swapped in after the check is not followed
                return _open_local_read(self._full(rel), rel)
            file = self._fs.open(self._full(rel), "rb")
            if (getattr(file, "details", None) or {}).get("type") == "directory":
                file.close()  # object stores open a folder prefix as an empty file
                raise IsADirectoryError(rel)
            return file  # type: ignore[no-any-return]

    def write_bytes(self, dest: str, data: bytes) -> None:
        rel = safe_relpath(dest)
        with self._errors(rel, writing=True), self.open_write(rel) as f:
            f.write(data)

    def read_bytes(self, path: str) -> bytes:
        rel = safe_relpath(path)
        with self._errors(rel), self.open_read(rel) as f:
            return f.read()

    def put_file(self, local_path: str | Path, dest: str) -> None:
        rel = safe_relpath(dest)
        if not Path(local_path).is_file():
            raise InvalidArgument(f"cannot store {str(local_path)!r}: it is not a readable file")
        with self._errors(rel, writing=True):
            if not self._local:
                self._fs.put_file(os.fspath(local_path), self._full(rel))
                return
            with open(local_path, "rb") as src, self.open_write(rel) as out:
                shutil.copyfileobj(src, out)

    def put_dir(self, local_dir: str | Path, dest: str) -> list[str]:
        base, local = safe_relpath(dest), Path(local_dir)
        if not local.is_dir():
            raise InvalidArgument(f"cannot store {str(local_dir)!r}: it is not a directory")
        stored: list[str] = []
        for file in sorted(p for p in local.rglob("*") if p.is_file()):
            rel = safe_relpath(f"{base}/{file.relative_to(local).as_posix()}")
            self.put_file(file, rel)
            stored.append(rel)
        return stored

    def list(self, prefix: str = "") -> list[ArtifactInfo]:
        rel = safe_relpath(prefix, allow_root=True)
        full = self._full(rel)
        with self._errors(rel):
            self._refuse_links(rel)
            try:
                entries = self._fs.ls(full, detail=True)
            except (FileNotFoundError, NotADirectoryError):
                return []
        infos = []
        for entry in entries:
            name = str(entry["name"]).rstrip("/")
            if name == full.rstrip("/") or (self._local and name.endswith(_TMP_SUFFIX)):
                continue  # a file lists as itself; local temp files are writes in flight
            if entry.get("islink"):
                continue  # links are never followed, so they are not artifacts either
            is_dir = entry.get("type") == "directory"
            size = None if is_dir else int(entry["size"])
            infos.append(ArtifactInfo(name[len(self._root) + 1 :], is_dir, size))
        return sorted(infos, key=lambda i: i.path)

    def exists(self, path: str) -> bool:
        rel = safe_relpath(path)
        with self._errors(rel):
            self._refuse_links(rel)
            return bool(self._fs.exists(self._full(rel)))

    def delete(self, prefix: str) -> None:
        rel = safe_relpath(prefix)
        with self._errors(rel):
            self._refuse_links(rel)
            with suppress(FileNotFoundError, NotADirectoryError):
                self._fs.rm(self._full(rel), recursive=True)
            # object stores have no empty folders; drop them locally so listings agree
            parent = posixpath.dirname(rel)
            while self._local and parent:
                try:
                    os.rmdir(self._full(parent))
                except OSError:
                    break
                parent = posixpath.dirname(parent)
