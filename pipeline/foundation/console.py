"""What a command prints besides its own lines: library noise is hidden unless `--verbose`.

Without `--verbose` a run shows its progress, its summary, real warnings and errors; not the
lines libraries log for their own developers: Beam's worker start-up and shut-down INFO lines
(~20 per local worker process), its `apitools not found` warning at every import of Beam, FAISS's
loader trying AVX-512 builds that are not installed. Those come from Python's logging in this
process (configured here) and from child processes (Beam's local workers, download's pool) that
write to the same stderr file descriptor and configure their own logging, so the child side is
filtered by line: while a command runs, fd 2 is a pipe whose lines pass through `is_noise`; this
process's own messages go straight to the real stderr (progress lines redraw in place as before).
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import threading

# Lines of library chatter, as children print them (logging's default "LEVEL:logger:message").
_NOISE = re.compile(
    r"^(?:"
    r"(?:DEBUG|INFO):"                                        # any library's INFO line
    r"|WARNING:root:apitools not found"                       # Beam's optional GCP client, at import
    r"|WARNING:__main__:No semi_persistent_directory found"   # Beam's local worker, at start ...
    r"|WARNING:apache_beam\.runners\.portability\.local_job_service:Worker: .*No semi_persistent_directory"
                                                              # ... the same, as the runner relays it
    r"|ModuleNotFoundError\(\"No module named 'faiss\.swigfaiss"  # FAISS loader, second line of an INFO
    r")"
)


# Whether the command running asked for --verbose (set by the root command for its duration).
VERBOSE = False


def is_noise(line: str) -> bool:
    """Whether a stderr line is library chatter hidden without --verbose (warnings and errors of
    substance, tracebacks and our own lines are not)."""
    return bool(_NOISE.match(line))


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not is_noise(f"{record.levelname}:{record.name}:{record.getMessage()}")


def configure_logging(verbose: bool) -> None:
    """This process's logging: INFO and up with --verbose, else WARNING and up without the noise."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:%(name)s:%(message)s"))
        root.addHandler(handler)
    for handler in root.handlers:
        ours = [f for f in handler.filters if isinstance(f, _DropNoise)]
        if verbose:   # a quiet command earlier in this process left its filter: --verbose shows all
            for f in ours:
                handler.removeFilter(f)
        elif not ours:
            handler.addFilter(_DropNoise())
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    # Beam logs its own progress (stages, bundles, renames) at INFO; faiss its loader
    for name in ("apache_beam", "faiss"):
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)


def _copy_lines(source_fd: int, target) -> None:
    """Pass the lines read from source_fd to target, leaving out the noise, until EOF."""
    with io.open(source_fd, "rb", buffering=0, closefd=True) as source:
        pending = b""
        while True:
            chunk = source.read(65536)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if not is_noise(line.decode("utf-8", "replace")):
                    target.write(line + b"\n")
                    target.flush()
        if pending and not is_noise(pending.decode("utf-8", "replace")):
            target.write(pending)
            target.flush()


@contextlib.contextmanager
def quiet_children(verbose: bool):
    """While the block runs, what child processes write to stderr passes `is_noise` line by line.

    Only when sys.stderr is the process's real stderr (fd 2): under a test's captured stderr, or
    with --verbose, nothing changes."""
    if verbose or sys.stderr is not sys.__stderr__ or not _is_fd(sys.__stderr__, 2):
        yield
        return
    sys.stderr.flush()
    real = os.dup(2)                       # the terminal or log, for this process and the copier
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)                  # children inherit the pipe as their stderr
    os.close(write_end)
    target = io.open(os.dup(real), "wb", buffering=0)
    copier = threading.Thread(target=_copy_lines, args=(read_end, target), name="stderr-filter", daemon=True)
    copier.start()
    own = io.TextIOWrapper(io.open(real, "wb", buffering=0, closefd=False), write_through=True,
                           encoding=sys.__stderr__.encoding, errors="backslashreplace")
    saved_stderr = sys.stderr
    sys.stderr = own                       # our lines (progress redraws) skip the line filter
    _repoint_handlers(saved_stderr, own)
    try:
        yield
    finally:
        sys.stderr = saved_stderr
        _repoint_handlers(own, saved_stderr)
        own.flush()
        os.dup2(real, 2)                   # closes the pipe's last write end in this process
        copier.join(timeout=5)             # children that outlive the block keep theirs open
        os.close(real)
        if not copier.is_alive():
            target.close()


def _is_fd(stream, fd: int) -> bool:
    try:
        return stream.fileno() == fd
    except (AttributeError, OSError, ValueError):
        return False


def _repoint_handlers(old, new) -> None:
    """Logging handlers writing to `old` write to `new` (our own warnings skip the line filter)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream is old:
            handler.setStream(new)
