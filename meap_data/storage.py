"""File access for local paths and object-store URLs (``gs://``, ``s3://``, via fsspec).

Writes are atomic: a local file is written under a temporary name and renamed; an
object-store upload becomes visible only when it completes. A retried or rerun writer
therefore never leaves a partial file under a final name.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from contextlib import contextmanager
from typing import IO, Iterator


def is_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def filesystem(path: str):
    """(fsspec filesystem, path without protocol) for a URL.

    Directory listings are not cached: Beam workers in other processes (or machines)
    write files that a cached listing in this process would hide. Credentials and
    endpoints come from the usual places (``AWS_*`` environment variables,
    ``AWS_ENDPOINT_URL_S3`` for S3-compatible servers, Google application default
    credentials), so every worker process finds them the same way.
    """
    import fsspec

    return fsspec.core.url_to_fs(path, use_listings_cache=False)


_fs = filesystem


def join(base: str, *parts: str) -> str:
    if is_remote(base):
        return "/".join([base.rstrip("/"), *parts])
    return os.path.join(base, *parts)


def exists(path: str) -> bool:
    if is_remote(path):
        fs, p = _fs(path)
        return fs.exists(p)
    return os.path.exists(path)


def makedirs(path: str) -> None:
    if not is_remote(path):
        os.makedirs(path, exist_ok=True)


def listdir(path: str) -> list[str]:
    """Names (not paths) in a directory; empty when it does not exist."""
    if is_remote(path):
        fs, p = _fs(path)
        if not fs.exists(p):
            return []
        return sorted(os.path.basename(x.rstrip("/")) for x in fs.ls(p, detail=False))
    return sorted(os.listdir(path)) if os.path.isdir(path) else []


def remove_tree(path: str) -> None:
    if is_remote(path):
        fs, p = _fs(path)
        if fs.exists(p):
            fs.rm(p, recursive=True)
        return
    import shutil

    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.remove(path)


def remove(path: str) -> None:
    if is_remote(path):
        fs, p = _fs(path)
        if fs.exists(p):
            fs.rm(p)
    elif os.path.exists(path):
        os.remove(path)


def open_read(path: str) -> IO[bytes]:
    """A binary file open for reading; seekable (object stores: ranged reads)."""
    if is_remote(path):
        fs, p = _fs(path)
        return fs.open(p, "rb")
    return open(path, "rb")


def read_bytes(path: str) -> bytes:
    with open_read(path) as f:
        return f.read()


def fingerprint(path: str) -> tuple | None:
    """What changes when a file is replaced (size, modification time, inode or ETag),
    or None when it is gone."""
    try:
        if is_remote(path):
            fs, p = _fs(path)
            info = fs.info(p)
            return (info.get("size"), str(info.get("ETag") or info.get("etag") or info.get("mtime")
                                          or info.get("LastModified") or info.get("updated")))
        st = os.stat(path)
        return (st.st_size, st.st_mtime_ns, st.st_ino)
    except (FileNotFoundError, OSError):
        return None


def size(path: str) -> int:
    if is_remote(path):
        fs, p = _fs(path)
        return int(fs.size(p))
    return os.path.getsize(path)


class HashingWriter:
    """A write-only file wrapper that counts bytes and computes their sha256.

    Writes are gathered into chunks of :data:`CHUNK_BYTES`; a background thread hashes
    and writes each full chunk (``hashlib`` and file writes release the GIL on large
    buffers), so the caller goes on packing and masking meanwhile. At most
    :data:`QUEUED_CHUNKS` chunks wait, which bounds the memory. :meth:`finish` drains
    (the atomic writer calls it before the file is committed); an error in the thread is
    raised by the next call.
    """

    CHUNK_BYTES = 4 << 20
    QUEUED_CHUNKS = 2

    def __init__(self, raw: IO[bytes]):
        self._raw = raw
        self._hash = hashlib.sha256()
        self.bytes_written = 0
        self._buffer = bytearray()
        self._queue = None
        self._thread = None
        self._error: BaseException | None = None

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        n = view.nbytes
        if self._error is not None:
            raise self._error
        if not self._buffer and n >= self.CHUNK_BYTES:
            self._submit(bytes(view))  # a copy: the caller may reuse its buffer
        else:
            self._buffer += view
            if len(self._buffer) >= self.CHUNK_BYTES:
                self._submit_buffer()
        self.bytes_written += n
        return n

    def _submit_buffer(self) -> None:
        if self._buffer:
            chunk, self._buffer = self._buffer, bytearray()
            self._submit(chunk)

    def _submit(self, chunk) -> None:
        if self._thread is None:
            import queue
            import threading

            self._queue = queue.Queue(maxsize=self.QUEUED_CHUNKS)
            self._thread = threading.Thread(target=self._drain, name="meap-data-writer", daemon=True)
            self._thread.start()
        self._queue.put(chunk)

    def _drain(self) -> None:
        while True:
            chunk = self._queue.get()
            if chunk is None:
                return
            if self._error is not None:
                continue  # keep taking chunks so the producer never blocks
            try:
                self._hash.update(chunk)
                self._raw.write(chunk)
            except BaseException as exc:  # raised in the caller's thread
                self._error = exc

    def _stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def finish(self) -> None:
        """Hash and write everything written so far; raises an error the thread met."""
        self._submit_buffer()
        self._stop()
        if self._error is not None:
            raise self._error

    def discard(self) -> None:
        """Stop the thread, dropping what is not written yet (the file is abandoned)."""
        self._buffer = bytearray()
        self._error = self._error or RuntimeError("discarded")
        self._stop()

    def flush(self) -> None:
        self._submit_buffer()

    def tell(self) -> int:
        return self.bytes_written

    @property
    def closed(self) -> bool:
        return False

    def sha256(self) -> str:
        """The sha256 of every byte written (call after :meth:`finish`)."""
        if self._thread is not None or self._buffer:
            raise RuntimeError("sha256() before finish(): bytes are still pending")
        return self._hash.hexdigest()


@contextmanager
def atomic_writer(path: str) -> Iterator[HashingWriter]:
    """Write ``path`` atomically; the yielded writer reports size and sha256."""
    if is_remote(path):
        fs, p = _fs(path)
        raw = fs.open(p, "wb")
        writer = HashingWriter(raw)
        try:
            yield writer
            writer.finish()
        except BaseException:
            writer.discard()
            # Closing would commit the partial upload under the final name: abort it.
            raw.discard()
            raw.closed = True
            raise
        raw.close()
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:12]}"
    try:
        with open(tmp, "wb") as raw:
            writer = HashingWriter(raw)
            try:
                yield writer
                writer.finish()
            except BaseException:
                writer.discard()
                raise
        # No fsync: the rename makes the file appear whole or not at all to every reader
        # and to a rerun after a crash of the process; surviving power loss is left to
        # the storage (object stores, and re-running prepare, give that).
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_bytes_atomic(path: str, data: bytes) -> str:
    """Write ``data`` atomically; returns its sha256."""
    with atomic_writer(path) as w:
        w.write(data)
    return w.sha256()


def sha256_file(path: str, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open_read(path) as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def create_exclusive(path: str, data: bytes) -> bool:
    """Create ``path`` holding ``data`` only if it does not exist; False when it does.

    Local files: ``O_CREAT | O_EXCL``, atomic. Object stores: an exclusive create
    (``"xb"``: S3 conditional writes in s3fs, a generation match in gcsfs) where the
    filesystem supports it, else a check then a write (two runs starting within the
    same few milliseconds could then both pass)."""
    if is_remote(path):
        fs, p = _fs(path)
        try:
            with fs.open(p, "xb") as f:
                f.write(data)
            return True
        except FileExistsError:
            return False
        except (ValueError, NotImplementedError, TypeError):
            if fs.exists(p):
                return False
            with fs.open(p, "wb") as f:
                f.write(data)
            return True
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return True
