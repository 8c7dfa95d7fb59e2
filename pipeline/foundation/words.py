"""Counts in words for the summaries every command prints: "1 shard", "3 shards", "1,204 samples"."""
from __future__ import annotations


def count(n: int, noun: str, plural: str | None = None) -> str:
    """n with its noun, singular for exactly one ("1 problem", "0 problems", "2,000 entries" with
    plural="entries")."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"
