"""What `clipdata curate` shows while it runs: pool rows read and matched, the share of the pool
read, with rate and ETA.

Each worker notes, per piece of the pool it matches (a run of a parquet file's row groups, or a
whole csv/jsonl/WAT file), its rows read and matched and the share of its file's bytes it holds
(`pool.piece_share`; a parquet piece's share grows with its rows read, a whole file's counts when
it is done) every few seconds in the job's work folder; the driver's watcher weighs the shares by
the file sizes. Notes are files on Beam's file systems, so the same watcher works on a cluster.
Matching is the long step; de-duplicating and balancing after it take a few seconds per million
rows and show in the final time.
"""
from __future__ import annotations

import time

from apache_beam.io.filesystems import FileSystems

from clipdata.pipeline.foundation.progress import Note, Watcher, eta, read_notes
from clipdata.pipeline.foundation.words import count, percent


def piece_note(work_dir: str, name: str, path: str) -> Note:
    note = Note(FileSystems.join(work_dir, f"progress-{name}.json"))
    note.counts["file"] = path
    return note


def file_sizes(files: list[str]) -> dict[str, int]:
    """Bytes of each pool file (one metadata lookup per file, before the job)."""
    sizes = {}
    for result in FileSystems.match(files):
        for m in result.metadata_list:
            sizes[m.path] = m.size_in_bytes
    return {f: sizes.get(f, 0) for f in files}


class CurateWatcher(Watcher):
    """The driver's view of the matching step: rows read, matched, share of the pool's bytes read."""

    def __init__(self, work_dir: str, sizes: dict[str, int], stream=None):
        super().__init__(stream)
        self.work_dir, self.sizes = work_dir, sizes
        self.total = sum(sizes.values())

    def text(self) -> str:
        notes = [note for _, note in read_notes(FileSystems.join(self.work_dir, "progress-*.json"))]
        rows = sum(n.get("rows", 0) for n in notes)
        matched = sum(n.get("matched", 0) for n in notes)
        read = 0.0
        for n in notes:
            share = n.get("share", 0.0)
            if not n.get("done"):
                piece_rows = n.get("piece_rows")
                share = share * min(1.0, n.get("rows", 0) / piece_rows) if piece_rows else 0.0
            read += share * self.sizes.get(n.get("file"), 0)
        elapsed = max(time.time() - self.started, 1e-9)
        fraction = read / self.total if self.total else 0.0
        return (f"curate: {count(rows, 'pool row')} read ({rows / elapsed:,.0f}/s), {matched:,} matched, "
                f"{percent(fraction)} of the pool; ETA {eta(read, self.total, elapsed)}")
