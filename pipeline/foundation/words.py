"""Counts and shares in words for the summaries every command prints and the pages show: "1 shard",
"3 shards", "1,204 samples", "15.3%"."""
from __future__ import annotations


def count(n: int, noun: str, plural: str | None = None) -> str:
    """n with its noun, singular for exactly one ("1 problem", "0 problems", "2,000 entries" with
    plural="entries")."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"


def percent(fraction: float) -> str:
    """A share in the one format every page and summary uses: one decimal ("15.3%", "0.0%"), two
    significant digits below 0.1% so a small non-zero share does not read as none ("0.033%")."""
    value = 100 * fraction
    if 0 < abs(value) < 0.1:
        return f"{value:.2g}%"
    return f"{value:.1f}%"


def size(nbytes: float) -> str:
    """Bytes in decimal units with one decimal: "1.1 KB", "22.0 GB", "512 B"."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:,.1f} {unit}"
    return f"{nbytes:,.0f} B"
