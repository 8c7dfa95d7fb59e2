"""What `clipdata dedup` shows while it runs: test images hashed, training shards searched,
candidates screened and checked on the pixels, with rates and an ETA.

On a terminal one line is redrawn in place; in a log (stderr not a terminal) a plain line is
written every LOG_EVERY seconds. The shard counts come from small files the workers write in
the job's work folder (`_work/progress-*.json`) once a shard is done, so the same driver-side watcher
works on the local runner and on a cluster writing to gs:// or s3://, as download's does.
"""
from __future__ import annotations

import time

from apache_beam.io.filesystems import FileSystems

from clipdata.pipeline.foundation.progress import Line, Watcher, eta, read_notes, write_note

# The status line (terminal or log) and the ETA are the foundation's, shared with download.


class Counter:
    """n of total things done, with rate and ETA: `with Counter("hashed", total, "test images") as c:
    c.add(k)`."""

    def __init__(self, verb: str, total: int, noun: str, stream=None):
        self.verb, self.total, self.noun = verb, total, noun
        self.done, self.started = 0, time.time()
        self.line = Line(stream)

    def _text(self) -> str:
        elapsed = max(time.time() - self.started, 1e-9)
        return (f"dedup: {self.verb} {self.done:,}/{self.total:,} {self.noun} "
                f"({self.done / elapsed:,.1f}/s, ETA {eta(self.done, self.total, elapsed)})")

    def add(self, n: int = 1) -> None:
        self.done += n
        self.line.show(self._text())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        elapsed = time.time() - self.started
        self.line.show(f"dedup: {self.verb} {self.done:,} {self.noun} in {elapsed:.1f} s", final=True)


# ---------------------------------------------------------------------------------------------
# Shards: written by the workers, read by the driver


def record(work: str, step: str, name: str, counts: dict) -> None:
    """A worker's note for `step`: search and verify, one per shard when it is done (rewritten,
    not added to, by a retry); screen, one per worker with its running totals (rewritten as they
    grow)."""
    write_note(FileSystems.join(work, f"progress-{step}-{name}.json"), counts)


def _read_all(work: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {"search": [], "screen": [], "verify": []}
    for name, note in read_notes(FileSystems.join(work, "progress-*.json")):
        out.setdefault(name.split("-")[1], []).append(note)
    return out


class ShardWatcher(Watcher):
    """The driver's view of the Beam job: shards searched of all, training images, candidates,
    screened (grouped by test image, so once the search is done) and rejected there, checked on
    the pixels; a line every few seconds until the job ends. The rate and ETA are the search's
    while it runs, then the screen's (`screening` False: --no-verify, nothing is screened)."""

    def __init__(self, work: str, shards: int, stream=None, screening: bool = True):
        super().__init__(stream)
        self.work, self.shards, self.screening = work, shards, screening
        self.searched_in = None    # seconds the search took, once it is done
        self.screen_started = None

    def text(self) -> str:
        notes = _read_all(self.work)
        search, screen, verify = notes["search"], notes["screen"], notes["verify"]
        images = sum(n.get("images", 0) for n in search)
        candidates = sum(n.get("candidates", 0) for n in search)
        screened = sum(n.get("screened", 0) for n in screen)
        rejected = sum(n.get("screened_out", 0) for n in screen)
        pixels = sum(n.get("pixels", 0) for n in verify)
        now = time.time()
        elapsed = max(now - self.started, 1e-9)
        if len(search) < self.shards:
            left = eta(len(search), self.shards, elapsed)
        else:   # the search is done: its rate as it was, and the screen's pace from when it was first seen
            self.searched_in = self.searched_in or elapsed
            self.screen_started = self.screen_started or now
            if not (self.screening and candidates):
                left = "-"
            else:
                left = eta(screened, candidates, max(now - self.screen_started, 1e-9)) if screened else "?"
        rate = images / (self.searched_in or elapsed)
        screen = (f"screened {min(screened, candidates):,}/{candidates:,} candidates ({rejected:,} rejected on "
                  f"thumbnails)" if self.screening else f"{candidates:,} candidates (not verified)")
        return (f"dedup: searched {len(search):,}/{self.shards:,} shards ({images:,} training images, "
                f"{rate:,.0f}/s), {screen}, {pixels:,} checked on pixels; ETA {left}")
