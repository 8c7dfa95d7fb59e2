"""Where every stage's outputs are written: the local file system directly, any other (gs://,
s3://, hdfs://, ...) through Beam's FileSystems; and the one way a file is written atomically.

A file is written under a temporary name beside its final one (`.NAME.tmp-<16 hex>`: hidden, and
one pattern, TEMP_NAME, for every writer's clean-up), flushed and fsynced, then renamed into
place, and the folder fsynced: a reader, or a run killed at any moment, sees the whole new file or
the old one, never half of either. On object stores a rename is a copy then delete: not atomic,
but the final name still appears only once the data is complete.

    atomic_write("out/report.json", data)                      # bytes
    atomic_write("out/step_10.pt", lambda f: torch.save(state, f))
    temp, info = write_temp(storage, folder, "00012.tar", write)  # commit later, in an order
    storage.replace(temp, storage.join(folder, "00012.tar"))
"""
from __future__ import annotations

import hashlib
import os
import re
import uuid
from typing import Callable

TEMP_NAME = re.compile(r"^\..+\.tmp-[0-9a-f]+$")


class LocalStorage:
    durable = True

    def join(self, folder: str, name: str) -> str:
        return os.path.join(folder, name)

    def makedirs(self, folder: str) -> None:
        os.makedirs(folder, exist_ok=True)

    def create(self, path: str):
        return open(path, "xb")

    def close_durably(self, f) -> None:
        f.flush()
        os.fsync(f.fileno())
        f.close()

    def open(self, path: str):
        return open(path, "rb")

    def replace(self, src: str, dst: str) -> None:
        os.replace(src, dst)

    def sync_folder(self, folder: str) -> None:
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def list(self, folder: str) -> list[str]:
        try:
            return sorted(os.listdir(folder))
        except FileNotFoundError:
            return []

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def delete(self, path: str) -> None:
        os.remove(path)


class BeamStorage:
    """gs://, s3://, hdfs://, ...: Beam's FileSystems (imported only when such a path is used)."""

    durable = False

    def __init__(self):
        from apache_beam.io.filesystem import CompressionTypes
        from apache_beam.io.filesystems import FileSystems

        self.fs, self.raw = FileSystems, CompressionTypes.UNCOMPRESSED

    def join(self, folder: str, name: str) -> str:
        return self.fs.join(folder, name)

    def makedirs(self, folder: str) -> None:
        try:
            self.fs.mkdirs(folder)
        except IOError:
            pass  # exists already (object stores have no folders: mkdirs is a no-op there)

    def create(self, path: str):
        return self.fs.create(path, compression_type=self.raw)

    def close_durably(self, f) -> None:
        f.close()

    def open(self, path: str):
        return self.fs.open(path, compression_type=self.raw)

    def replace(self, src: str, dst: str) -> None:
        self.fs.rename([src], [dst])

    def sync_folder(self, folder: str) -> None:
        pass

    def list(self, folder: str) -> list[str]:
        pattern = self.fs.join(folder, "*")
        found = self.fs.match([pattern])[0].metadata_list
        return sorted(m.path.rstrip("/").rsplit("/", 1)[-1] for m in found)

    def exists(self, path: str) -> bool:
        return self.fs.exists(path)

    def delete(self, path: str) -> None:
        self.fs.delete([path])


def storage_for(path: str):
    """The storage a path lives on: LocalStorage for a local path, BeamStorage for one with a scheme."""
    return BeamStorage() if "://" in str(path) else LocalStorage()


class _HashingWriter:
    """A write-only file that counts and hashes what goes through it (tarfile's stream target)."""

    def __init__(self, f):
        self.f, self.size, self.sha256 = f, 0, hashlib.sha256()

    def write(self, data) -> int:
        # Any buffer, not only bytes: pickle (protocol 5) hands large arrays over as PickleBuffer.
        view = memoryview(data).cast("B")
        self.f.write(view)
        self.size += view.nbytes
        self.sha256.update(view)
        return view.nbytes

    def flush(self) -> None:
        self.f.flush()


def write_temp(storage, folder: str, name: str, write) -> tuple[str, dict]:
    """Write a file under a temporary name next to `name`; returns the temp path and write()'s info."""
    temp = storage.join(folder, f".{name}.tmp-{uuid.uuid4().hex[:16]}")
    f = storage.create(temp)
    try:
        out = _HashingWriter(f)
        write(out)
        storage.close_durably(f)
    except BaseException:
        f.close()
        try:
            storage.delete(temp)
        except Exception:  # noqa: BLE001 - the original error is the one to raise
            pass
        raise
    return temp, {"bytes": out.size, "sha256": out.sha256.hexdigest()}


def atomic_write(path: str, data: bytes | Callable) -> dict:
    """Write `data` (bytes, or a function given the open file) to `path` atomically, creating its
    folder; returns {"bytes", "sha256"} of what was written."""
    path = str(path)
    storage = storage_for(path)
    if "://" in path:
        folder, name = path.rsplit("/", 1)
    else:
        folder, name = os.path.split(os.path.abspath(path))
    storage.makedirs(folder)
    write = data if callable(data) else (lambda f: f.write(data))
    temp, info = write_temp(storage, folder, name, write)
    try:
        storage.replace(temp, path)
    except BaseException:
        try:
            storage.delete(temp)
        except Exception:  # noqa: BLE001 - the original error is the one to raise
            pass
        raise
    storage.sync_folder(folder)
    return info


def delete_matching(prefix: str) -> int:
    """Delete every file whose path starts with `prefix` (a folder's `name-*` outputs of an
    earlier run), on any file system; returns how many."""
    from apache_beam.io.filesystems import FileSystems

    stale = [m.path for m in FileSystems.match([prefix + "*"])[0].metadata_list]
    if stale:
        FileSystems.delete(stale)
    return len(stale)


def clear_folder(folder: str, remove: bool = False) -> None:
    """Empty `folder` (any file system) and leave it there, created when missing; with `remove`,
    take the emptied folder away too (a local one; object stores have no empty folders)."""
    from apache_beam.io.filesystems import FileSystems

    if FileSystems.exists(folder):
        delete_matching(FileSystems.join(folder, ""))
        if remove and "://" not in folder:
            os.rmdir(folder)
    elif not remove:
        FileSystems.mkdirs(folder)
