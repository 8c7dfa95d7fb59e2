"""What `clipdata queries build` shows while it runs: dump bytes read of all, articles counted,
pageview files read, with rate and ETA.

The workers reading the dump write a small note per work item (bytes of its range read, articles)
every NOTE_EVERY seconds and when it ends, into the counts folder (`counts/progress-*.json`); the
driver's watcher sums them every few seconds (foundation/progress: a redrawn line on a terminal, a
plain line now and then in a log). Notes are files on Beam's file systems, so the same watcher works
on a cluster writing to gs:// or s3://. Cost: one small write per worker every NOTE_EVERY s.
"""
from __future__ import annotations

import time
import zlib

from apache_beam.io.filesystems import FileSystems

from clipdata.pipeline.foundation.progress import Watcher, eta, read_notes, write_note
from clipdata.pipeline.foundation.words import count, size

NOTE_EVERY = 5.0   # seconds between a worker's notes on one work item


def note_name(kind: str, path: str, start: int = 0) -> str:
    """The note of one work item: a dump range (path, start) or a pageview file."""
    return f"progress-{kind}-{zlib.crc32(path.encode('utf-8')):08x}-{start}.json"


class Note:
    """A worker's running counts for one work item, written at most every NOTE_EVERY s (`update`)
    and once at the end (`done`)."""

    def __init__(self, folder: str, kind: str, path: str, start: int = 0):
        self.path = FileSystems.join(folder, note_name(kind, path, start))
        self.counts: dict = {"kind": kind}
        self.last = 0.0

    def update(self, **counts) -> None:
        self.counts.update(counts)
        now = time.monotonic()
        if now - self.last >= NOTE_EVERY:
            self.last = now
            write_note(self.path, self.counts)

    def done(self, **counts) -> None:
        self.counts.update(counts, done=True)
        write_note(self.path, self.counts)


class BuildWatcher(Watcher):
    """The driver's view of the counting job: dump bytes read of `dump_bytes`, articles, pageview
    files read of `view_files`; the ETA follows the dump when there is one (it is most of the work)."""

    def __init__(self, folder: str, dump_bytes: int, view_files: int, stream=None):
        super().__init__(stream)
        self.folder, self.dump_bytes, self.view_files = folder, dump_bytes, view_files

    def text(self) -> str:
        notes = [note for _, note in read_notes(FileSystems.join(self.folder, "progress-*.json"))]
        dump = [n for n in notes if n.get("kind") == "dump"]
        views = [n for n in notes if n.get("kind") == "views"]
        elapsed = max(time.time() - self.started, 1e-9)
        parts = []
        if self.dump_bytes:
            read = sum(n.get("bytes", 0) for n in dump)
            articles = sum(n.get("articles", 0) for n in dump)
            parts.append(f"Wikipedia {size(read)} of {size(self.dump_bytes)} read ({size(read / elapsed)}/s), "
                         f"{count(articles, 'article')} counted")
            done, total = read, self.dump_bytes
        if self.view_files:
            files = sum(1 for n in views if n.get("done"))
            lines = sum(n.get("lines", 0) for n in views)
            parts.append(f"pageviews {files:,}/{self.view_files:,} files ({count(lines, 'line')})")
            if not self.dump_bytes:
                done, total = files, self.view_files
        return f"queries: {', '.join(parts)}; ETA {eta(done, total, elapsed)}" if parts else "queries: counting"
