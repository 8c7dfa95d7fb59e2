"""A Beam file system with its own scheme, `remote://`, kept in a local folder: for tests that a
job makes no local-path assumptions (no os.path, no memory-mapping a path it cannot map), as on
gs:// or s3://. Set `RemoteFileSystem.root` to a folder first; `remote://a/b` is `<root>/a/b`."""
from __future__ import annotations

import os

from apache_beam.io.filesystem import FileMetadata
from apache_beam.io.localfilesystem import LocalFileSystem

PREFIX = "remote://"


class RemoteFileSystem(LocalFileSystem):
    root: str | None = None

    @classmethod
    def scheme(cls):
        return "remote"

    def _local(self, path: str) -> str:
        if not path.startswith(PREFIX) or self.root is None:
            raise ValueError(f"not a remote:// path, or no root set: {path}")
        return os.path.join(self.root, path[len(PREFIX):])

    def _remote(self, path: str) -> str:
        return PREFIX + os.path.relpath(path, self.root)

    def join(self, basepath, *paths):
        return "/".join([basepath.rstrip("/"), *[p.strip("/") for p in paths]])

    def split(self, path):
        head, _, tail = path.rpartition("/")
        return head, tail

    def has_dirs(self):
        return False  # like an object store: folders are only prefixes

    def mkdirs(self, path):
        os.makedirs(self._local(path), exist_ok=True)

    def _list(self, dir_or_prefix):
        """Every file whose path starts with the prefix, as an object store lists."""
        prefix = self._local(dir_or_prefix)
        top = prefix if os.path.isdir(prefix) else os.path.dirname(prefix)
        for folder, _, files in os.walk(top):
            for name in files:
                path = os.path.join(folder, name)
                if path.startswith(prefix):
                    yield FileMetadata(self._remote(path), os.path.getsize(path), os.path.getmtime(path))

    def create(self, path, *args, **kwargs):
        os.makedirs(os.path.dirname(self._local(path)), exist_ok=True)
        return super().create(self._local(path), *args, **kwargs)

    def open(self, path, *args, **kwargs):
        return super().open(self._local(path), *args, **kwargs)

    def copy(self, sources, destinations):
        return super().copy([self._local(p) for p in sources], [self._local(p) for p in destinations])

    def rename(self, sources, destinations):
        return super().rename([self._local(p) for p in sources], [self._local(p) for p in destinations])

    def exists(self, path):
        return os.path.exists(self._local(path))

    def size(self, path):
        return os.path.getsize(self._local(path))

    def last_updated(self, path):
        return os.path.getmtime(self._local(path))

    def checksum(self, path):
        return str(os.path.getsize(self._local(path)))

    def metadata(self, path):
        local = self._local(path)
        return FileMetadata(path, os.path.getsize(local), os.path.getmtime(local))

    def delete(self, paths):
        import shutil

        from apache_beam.io.filesystem import BeamIOError

        missing = {}
        for path in paths:
            local = self._local(path)
            if os.path.isdir(local):
                shutil.rmtree(local)
            elif os.path.exists(local):
                os.remove(local)
            else:
                missing[path] = FileNotFoundError(path)
        if missing:
            raise BeamIOError("Delete operation failed", missing)
