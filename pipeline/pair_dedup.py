"""Exact dedup of (url, caption) pairs.

A pair's uid is a hash of both strings, so the same image with another caption (or the same
caption on another image) stays. Of several copies the first by (source file, source row) is kept,
a rule that does not depend on the order rows reach a worker, so every runner keeps the same copy.
"""
from __future__ import annotations

import hashlib

import numpy as np


def pair_uid(url: str, caption: str) -> str:
    """32 hex digits of BLAKE2b over url and caption (a separator byte neither can contain)."""
    digest = hashlib.blake2b(f"{url}\x00{caption}".encode("utf-8", "surrogatepass"), digest_size=16)
    return digest.hexdigest()


def uid_hash(uid: str) -> int:
    """The uid's first 64 bits, as the integer balancing draws and partitioning use."""
    return int(uid[:16], 16)


def uid_hashes(uids) -> np.ndarray:
    return np.fromiter((int(u[:16], 16) for u in uids), dtype=np.uint64, count=len(uids))


def first_copies(uids: list[str], source_files: list[str], source_rows: np.ndarray) -> np.ndarray:
    """Mask of the rows to keep: for each uid, the row with the smallest (source file, row)."""
    n = len(uids)
    if n == 0:
        return np.zeros(0, dtype=bool)
    # Sorting on the uid's two 64-bit halves, the file's rank and the row is a sort on
    # (uid, source file, source row), vectorised: the uid is 32 hex digits.
    high = np.fromiter((int(u[:16], 16) for u in uids), dtype=np.uint64, count=n)
    low = np.fromiter((int(u[16:], 16) for u in uids), dtype=np.uint64, count=n)
    _, file_rank = np.unique(np.asarray(source_files, dtype=object), return_inverse=True)
    order = np.lexsort((np.asarray(source_rows, dtype=np.int64), file_rank, low, high))
    first = np.ones(n, dtype=bool)
    first[1:] = (high[order][1:] != high[order][:-1]) | (low[order][1:] != low[order][:-1])
    keep = np.zeros(n, dtype=bool)
    keep[order[first]] = True
    return keep
