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

from clipdata.pipeline.foundation.progress import Note, Watcher, eta, read_notes
from clipdata.pipeline.foundation.words import count, size

def note_name(kind: str, path: str, start: int = 0) -> str:
    """The note of one work item: a dump range (path, start) or a pageview file."""
    return f"progress-{kind}-{zlib.crc32(path.encode('utf-8')):08x}-{start}.json"


def work_note(folder: str, kind: str, path: str, start: int = 0) -> Note:
    """A worker's note on one work item, its kind ("dump", "views") among its counts."""
    note = Note(FileSystems.join(folder, note_name(kind, path, start)))
    note.counts["kind"] = kind
    return note


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
