"""Balancing: CLIP's "up to 20,000 (image, text) pairs per query", as MetaCLIP's algorithm does it.

Given how many pairs of the whole pool match each entry (count_e), a pair is kept with probability
1 - prod_e (1 - min(1, t / count_e)) over its matched entries: an entry matched by fewer than t
pairs keeps all of them, and a head entry like "the" keeps about t. MetaCLIP draws one random
number per (pair, entry) and keeps the pair if any draw falls under t / count_e; we do the same,
but each draw is a hash of (seed, pair uid, entry id) instead of a random generator's next value,
so a rerun, a retried Beam bundle or another runner keeps exactly the same pairs.

Everything here is plain numpy over a batch in CSR form (offsets, entry_ids), as the matcher
returns it. In the foundation because two stages balance: curate (offline, once) and the trainer's
loader (online, drawn afresh each time a sample is read: trainer/online_balance.py).
"""
from __future__ import annotations

import numpy as np

DEFAULT_MAX_PER_ENTRY = 20_000

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijection of uint64 that spreads every input bit."""
    x = x.astype(np.uint64, copy=True)
    x ^= x >> np.uint64(30)
    x *= _M1
    x ^= x >> np.uint64(27)
    x *= _M2
    x ^= x >> np.uint64(31)
    return x


def keep_probability(counts: np.ndarray, max_per_entry: int | np.ndarray) -> np.ndarray:
    """min(1, t / count_e) per entry; entries nothing matched get 1 (never used). t is one number
    or one per entry (worldwide lists: each entry its language's t)."""
    counts = np.asarray(counts, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.where(counts > max_per_entry, max_per_entry / np.maximum(counts, 1), 1.0)


def draws(seed: int, pair_hashes: np.ndarray, offsets: np.ndarray, entry_ids: np.ndarray) -> np.ndarray:
    """One uniform number in [0, 1) per (pair, matched entry), a pure function of the three."""
    per_match_pair = np.repeat(np.asarray(pair_hashes, dtype=np.uint64), np.diff(offsets))
    return _draws(seed, per_match_pair, entry_ids)


def _draws(seed: int, per_match_pair: np.ndarray, entry_ids: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        key = _mix(per_match_pair ^ _mix(np.uint64(seed) * _GOLDEN + np.asarray(entry_ids, dtype=np.uint64)))
        key = _mix(key + _GOLDEN)
    return (key >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def keep_mask(
    pair_hashes: np.ndarray,
    offsets: np.ndarray,
    entry_ids: np.ndarray,
    counts: np.ndarray,
    max_per_entry: int | np.ndarray = DEFAULT_MAX_PER_ENTRY,
    seed: int = 0,
) -> np.ndarray:
    """Which pairs of a batch balancing keeps. A pair with no matched entry is never kept."""
    offsets = np.asarray(offsets, dtype=np.int64)
    entry_ids = np.asarray(entry_ids, dtype=np.int64)
    n_pairs = len(offsets) - 1
    if len(entry_ids) == 0:
        return np.zeros(n_pairs, dtype=bool)
    # A draw in [0, 1) always falls under probability 1: only head entries need one.
    probability = keep_probability(counts, max_per_entry)[entry_ids]
    hit = probability >= 1.0
    head = np.flatnonzero(~hit)
    if len(head):
        per_match_pair = np.repeat(np.asarray(pair_hashes, dtype=np.uint64), np.diff(offsets))[head]
        hit[head] = _draws(seed, per_match_pair, entry_ids[head]) < probability[head]
    # any() per pair over its slice of matches; reduceat needs non-empty slices, so pairs without
    # matches are patched afterwards.
    starts = np.minimum(offsets[:-1], len(entry_ids) - 1)
    kept = np.logical_or.reduceat(hit, starts)
    kept &= np.diff(offsets) > 0
    return kept


# ---------------------------------------------------------------------------------------------
# Worldwide (MetaCLIP 2): one t per language, each leaving the same tail share as English's t


def tail_share(counts: np.ndarray, t: int) -> float:
    """The share of all matches that entries matched fewer than t times hold: the part of the data
    balancing at t leaves whole (MetaCLIP 2's `t_to_p`)."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    return float(counts[counts < t].sum() / total) if total else 0.0


def threshold_for_share(counts: np.ndarray, share: float) -> int:
    """The t that leaves about `share` of a language's matches in its tail (MetaCLIP 2's `p_to_t`):
    the count of the entry, ascending, at which the running share of matches is nearest `share`.
    Unlike MetaCLIP 2's, entries nothing matched are left out first, so a small language never
    gets t = 0 (which would drop every one of its pairs); t is at least 1."""
    counts = np.sort(np.asarray(counts, dtype=np.int64))
    counts = counts[counts > 0]
    if not len(counts):
        return 1
    running = np.cumsum(counts) / counts.sum()
    return max(1, int(counts[int(np.abs(running - share).argmin())]))


def language_thresholds(counts_by_language: dict[str, np.ndarray], t: int, reference: str = "en") -> dict[str, int]:
    """t per language: `reference` (English) keeps t; every other language the t that leaves the
    same tail share of its matches as t leaves of English's. Without the reference language, or
    when nothing of it matched, every language keeps t."""
    reference_counts = counts_by_language.get(reference)
    if reference_counts is None or not np.asarray(reference_counts).sum():
        return {language: t for language in counts_by_language}
    share = tail_share(reference_counts, t)
    return {language: (t if language == reference else threshold_for_share(counts, share))
            for language, counts in counts_by_language.items()}


def thresholds_per_entry(counts: np.ndarray, t: int, ranges: list[tuple[str, int, int]] | None
                         ) -> tuple[np.ndarray | int, dict[str, int]]:
    """(each entry's t, t per language) of one list (`ranges` None: t for every entry) or of a
    worldwide list, whose `ranges` are each language's (language, first entry id, end entry id):
    language_thresholds over each language's counts. What curate balances by and the trainer's
    online balancing keeps samples by."""
    if not ranges:
        return t, {"all": t}
    counts = np.asarray(counts)
    thresholds = language_thresholds({language: counts[start:end] for language, start, end in ranges}, t)
    per_entry = np.empty(len(counts), dtype=np.float64)
    for language, start, end in ranges:
        per_entry[start:end] = thresholds[language]
    return per_entry, thresholds


def language_ranges(languages: list[str]) -> list[tuple[str, int, int]]:
    """(language, first entry id, end entry id) of each run of a per-entry language column (the
    `language` of entry_counts.parquet, whose lists come one after another)."""
    ranges, start = [], 0
    for i in range(1, len(languages) + 1):
        if i == len(languages) or languages[i] != languages[start]:
            ranges.append((languages[start], start, i))
            start = i
    return ranges


def keep_pair(probability: np.ndarray, entry_ids, key: np.uint64 | int, seed: int) -> bool:
    """One pair's verdict, the rule of keep_mask: kept when any matched entry's draw falls under its
    probability; `key` a 64-bit number naming this reading of the pair (the online loader mixes the
    sample's key with the stream and group it is read in). No matched entry: kept (nothing to
    balance it by)."""
    ids = np.asarray(entry_ids, dtype=np.int64)
    ids = ids[(ids >= 0) & (ids < len(probability))]
    if not len(ids):
        return True
    p = probability[ids]
    if (p >= 1.0).any():
        return True
    draws_ = _draws(seed, np.full(len(ids), np.uint64(key), dtype=np.uint64), ids)
    return bool((draws_ < p).any())
