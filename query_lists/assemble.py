"""Put the sources of a query list together: order, dedup across sources, cap.

MetaCLIP's build_metadata.py starts from the strings "0".."99", adds WordNet, Wikipedia unigrams,
bigrams and titles in that order, skips empty entries and single punctuation characters, and
stops at 500,000. It keeps entries in Python sets, so its order inside a source is arbitrary; ours
is deterministic (each source arrives already ranked: most frequent or highest-scoring first), so
the cap always cuts the least supported entries and the same inputs give the same list.
"""
from __future__ import annotations

import string
from dataclasses import dataclass, field

DEFAULT_SOURCES = ("digits", "wordnet", "unigrams", "bigrams", "titles")
DEFAULT_MAX_ENTRIES = 500_000

# A lone punctuation mark would match almost every caption once MetaCLIP's matcher spaces out
# punctuation, so MetaCLIP never lets one into the list; neither do we.
FORBIDDEN = frozenset(string.punctuation)


def digit_entries() -> list[str]:
    return [str(i) for i in range(100)]


@dataclass
class SourceStats:
    offered: int = 0
    added: int = 0
    duplicate: int = 0
    forbidden: int = 0
    over_cap: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Assembled:
    entries: list[str]
    per_source: dict[str, SourceStats] = field(default_factory=dict)


def assemble(
    sources: list[tuple[str, list[str]]],
    max_entries: int = DEFAULT_MAX_ENTRIES,
    dedup: bool = True,
) -> Assembled:
    """Concatenate ranked sources in the given order into one list of at most max_entries."""
    entries: list[str] = []
    seen: set[str] = set()
    per_source: dict[str, SourceStats] = {}
    for name, candidates in sources:
        stats = per_source.setdefault(name, SourceStats())
        for entry in candidates:
            stats.offered += 1
            if not entry or entry in FORBIDDEN or "\n" in entry or "\r" in entry:
                stats.forbidden += 1
            elif dedup and entry in seen:
                stats.duplicate += 1
            elif len(entries) >= max_entries:
                stats.over_cap += 1
            else:
                entries.append(entry)
                seen.add(entry)
                stats.added += 1
    return Assembled(entries=entries, per_source=per_source)
