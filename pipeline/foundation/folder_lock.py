"""One writer per output folder: `clipdata download`, `curate`, `dedup` and `apply-blocklist` hold
a lock on the folder they write for as long as they run.

Two runs writing one folder would both do every shard, and the clean-up a run does as it starts
(temporary files of a killed run) would delete the live run's files. So a second writer is refused
with a message naming the holder:

    with writer_lock("run/shards", "download"):
        ...                                          # the whole job

The lock is the operating system's (`flock` on `<folder>/.clipdata.lock`): it goes when its
holder's process ends in any way, kill -9 included, so a killed run never leaves a folder locked
and there is nothing to remove by hand. The file stays (deleting it would let a waiting run lock a
file no one else sees); it holds the holder's pid, host, command and start time, which the refusal
quotes. Folders on object stores (gs://, s3://) have no such lock: there the user keeps writers
apart (a cluster job is one writer however many workers it has).
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import time

try:
    import fcntl
except ImportError:  # not POSIX: no lock
    fcntl = None

LOCK_NAME = ".clipdata.lock"


class FolderBusy(Exception):
    """`folder` is being written by another run: `holder` is what it wrote in the lock file
    (pid, host, command, started; empty when it had not written it yet)."""

    def __init__(self, folder: str, holder: dict):
        self.folder, self.holder = folder, holder
        who = f"clipdata {holder.get('command', '?')}"
        where = ", ".join(x for x in (f"pid {holder['pid']}" if "pid" in holder else "",
                                      f"on {holder['host']}" if "host" in holder else "",
                                      f"since {holder['started']}" if "started" in holder else "") if x)
        super().__init__(f"{folder} is being written by another {who}{f' ({where})' if where else ''}; "
                         "wait for it to finish, or write to another folder")


def _holder(fd: int) -> dict:
    try:
        data = json.loads(os.pread(fd, 4096, 0).decode("utf-8") or "{}")
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


@contextlib.contextmanager
def writer_lock(folder: str, command: str):
    """Hold `folder`'s writer lock for the block (creating the folder); FolderBusy when another
    process holds it."""
    if fcntl is None or "://" in str(folder):
        yield
        return
    folder = str(folder)
    os.makedirs(folder, exist_ok=True)
    fd = os.open(os.path.join(folder, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderBusy(folder, _holder(fd)) from None
        me = {"command": command, "pid": os.getpid(), "host": socket.gethostname(),
              "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode("utf-8"), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
