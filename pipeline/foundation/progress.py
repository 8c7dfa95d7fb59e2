"""A status line for long work, as every command shows it: on a terminal one line redrawn in
place (every TTY_EVERY s); in a log (stderr not a terminal) a plain line every LOG_EVERY s and
at the end. With the ETA's arithmetic. Used by dedup's stages, download and apply-blocklist."""
from __future__ import annotations

import sys
import threading
import time

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
