"""A status line for long work, as every command shows it: on a terminal one line redrawn in
place (every TTY_EVERY s); in a log (stderr not a terminal) a plain line every LOG_EVERY s and
at the end. With the ETA's arithmetic, and the notes workers write for a driver's watcher. Used by
queries build, curate, dedup's stages, download and apply-blocklist."""
from __future__ import annotations

import json
import sys
import threading
import time

from apache_beam.io.filesystems import FileSystems

TTY_EVERY = 0.5    # seconds between redraws on a terminal
LOG_EVERY = 30.0   # seconds between lines in a log


def eta(done: float, total: float, elapsed: float) -> str:
    if done <= 0 or total <= done:
        return "-"
    left = elapsed * (total - done) / done
    return f"{int(left // 60)}m{int(left % 60):02d}s" if left >= 60 else f"{left:.0f}s"


class Line:
    """A status line: redrawn on a terminal, printed every LOG_EVERY s (and at the end) in a log."""

    def __init__(self, stream=None):
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.last, self.text = 0.0, ""

    def show(self, text: str, final: bool = False) -> None:
        now = time.time()
        self.text = text
        if self.tty:
            if final or now - self.last >= TTY_EVERY:
                print("\r\x1b[2K" + text, end="\n" if final else "", file=self.stream, flush=True)
                self.last = now
        elif final or now - self.last >= LOG_EVERY:
            print(text, file=self.stream, flush=True)
            self.last = now


# Notes: what workers tell the driver's watcher, a small JSON file per shard (local or any Beam file
# system, so a watcher works the same on a cluster).


def write_note(path: str, counts: dict) -> None:
    """Write (or rewrite) a worker's note; best-effort: a progress line is not worth failing a
    shard for."""
    try:
        with FileSystems.create(path) as handle:
            handle.write(json.dumps(counts).encode("utf-8"))
    except Exception:  # noqa: BLE001
        pass


def read_notes(pattern: str) -> list[tuple[str, dict]]:
    """(file name, note) of every note matching `pattern`; none while the folder does not exist,
    a note being written right now left out."""
    try:
        matches = FileSystems.match([pattern])[0].metadata_list
    except Exception:  # noqa: BLE001 - the folder may not exist yet
        return []
    out = []
    for m in matches:
        try:
            with FileSystems.open(m.path) as handle:
                out.append((m.path.replace("\\", "/").rsplit("/", 1)[-1], json.loads(handle.read())))
        except Exception:  # noqa: BLE001 - being written right now
            continue
    return out


NOTE_EVERY = 5.0   # seconds between a worker's notes on one work item


class Note:
    """A worker's running counts for one work item (a dump range, a pool piece, a shard) in the
    note file `path`: written at most every NOTE_EVERY s (`update`) and once at the end (`done`,
    which adds done=True). Cost: one small write per work item every NOTE_EVERY s."""

    def __init__(self, path: str, every: float = NOTE_EVERY):
        self.path, self.every = path, every
        self.counts: dict = {}
        self.last = 0.0

    def update(self, **counts) -> None:
        self.counts.update(counts)
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            write_note(self.path, self.counts)

    def done(self, **counts) -> None:
        self.counts.update(counts, done=True)
        write_note(self.path, self.counts)

    def remove(self) -> None:
        """The work item is committed and counted elsewhere: its note goes (best-effort)."""
        try:
            if FileSystems.exists(self.path):
                FileSystems.delete([self.path])
        except Exception:  # noqa: BLE001 - best-effort, as the note itself
            pass


class Watcher:
    """A status line kept up to date while a job runs elsewhere (Beam workers): a thread shows
    `text()` every EVERY seconds through a Line; at the end, one last line: text() up to `cut`
    (the rate and ETA of a finished job say nothing) and the time taken. Subclasses say text()."""

    EVERY = 2.0

    def __init__(self, stream=None, cut: str = "; ETA"):
        self.line = Line(stream)
        self.cut = cut
        self.started = time.time()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def text(self) -> str:
        raise NotImplementedError

    def _run(self) -> None:
        while not self.stop.wait(self.EVERY):
            self.line.show(self.text())

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.line.show(self.text().split(self.cut)[0] + f" in {time.time() - self.started:.1f} s", final=True)
