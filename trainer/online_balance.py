"""Balancing online, in the loader (MetaCLIP's "online curation", its 1.2 and 2 recipes): shards
downloaded once at a loose t, a new balanced sample of the head entries every time the data is read.

Each training sample carries the query-list entries it matched (`entry_ids` in its json, as
`clipdata download` writes them) and, from a worldwide list, its language. Given how many of the
shards' pairs match each entry (`kept` in the curate run's entry_counts.parquet: what the shards
hold) and a t, a sample is kept with probability 1 - prod(1 - min(1, t_e / count_e)) over its
entries, the rule of curation (foundation/balance.py), with t_e its language's t (English's t for
English, the t leaving the same tail share for every other language: balance.language_thresholds).

The draw is a pure function of (seed, stream, group, sample key): a sample read again in a later
pass is in another (stream, group) of the loader and gets a fresh draw, and a resumed loader,
which replays its group, makes the same draws, so resume stays exact. A sample without entry ids
(shards made elsewhere) is kept. Cost: one json parse and a few hashes per sample.

    balance = OnlineBalance.from_curated("run/curated", t=5000, seed=0)
    balance.keep(entry_ids, stream, group, key)       # -> bool
"""
from __future__ import annotations

import hashlib
import json
import os

import numpy as np

from clipdata.pipeline.foundation import balance


class OnlineBalanceError(ValueError):
    """The curate run's counts cannot be read or do not fit the shards."""


class OnlineBalance:
    def __init__(self, probability: np.ndarray, seed: int = 0, thresholds: dict | None = None):
        self.probability = np.asarray(probability, dtype=np.float64)
        self.seed = int(seed)
        self.thresholds = thresholds or {}   # language -> t (for the log)

    @classmethod
    def from_counts(cls, counts: np.ndarray, t: int, seed: int = 0,
                    ranges: list[tuple[str, int, int]] | None = None) -> "OnlineBalance":
        """From pairs per entry in the shards; with a worldwide list's `ranges` ((language, first id,
        end id)), one t per language."""
        counts = np.asarray(counts, dtype=np.int64)
        per_entry, thresholds = balance.thresholds_per_entry(counts, t, ranges)
        return cls(balance.keep_probability(counts, per_entry), seed, thresholds)

    @classmethod
    def from_curated(cls, folder: str, t: int, seed: int = 0) -> "OnlineBalance":
        """From a curate run's folder (entry_counts.parquet: entry_id, kept, and language when the
        list was worldwide)."""
        import pyarrow.parquet as pq

        path = os.path.join(folder, "entry_counts.parquet")
        if not os.path.exists(path):
            raise OnlineBalanceError(f"{path} does not exist: give --online-balance the folder `clipdata curate` "
                                     "wrote (it holds entry_counts.parquet)")
        table = pq.read_table(path)
        ids = table.column("entry_id").to_numpy()
        if not (ids == np.arange(len(ids))).all():
            raise OnlineBalanceError(f"{path}: entry ids are not 0..{len(ids) - 1} in order")
        counts = table.column("kept").to_numpy()
        ranges = None
        if "language" in table.column_names:
            ranges = balance.language_ranges(table.column("language").to_pylist())
        return cls.from_counts(counts, t, seed, ranges)

    def keep(self, entry_ids, stream: int, group: int, key: str) -> bool:
        digest = hashlib.blake2b(f"{stream}:{group}:{key}".encode("utf-8", "surrogatepass"), digest_size=8).digest()
        return balance.keep_pair(self.probability, entry_ids, int.from_bytes(digest, "little"), self.seed)


def entry_ids_of(sample: dict) -> list[int] | None:
    """The entry ids a raw sample's json carries; None when it has none (or no readable json)."""
    raw = sample.get("json")
    if raw is None:
        return None
    try:
        ids = json.loads(raw).get("entry_ids")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return None
    return ids if isinstance(ids, list) else None
