"""Exact dedup of (url, caption) pairs.

A pair's uid is a hash of both strings, so the same image with another caption (or the same
caption on another image) stays. Of several copies the first by (source file, source row) is kept,
a rule that does not depend on the order rows reach a worker, so every runner keeps the same copy:
curate puts a partition's rows in that order (curate.partition_rows), then `first_occurrences`
marks the first row of each uid.

The uid is 32 hex digits: XXH3-128 (xxhash) of the UTF-8 bytes of `url + "\\x00" + caption`
(`pair_uid`), big-endian. A uid only has to tell pairs apart, so a fast non-cryptographic hash
serves: 128 bits make an accidental collision among 10^12 pairs about a 10^-15 chance, and XXH3
costs a fifth of BLAKE2b's time here (the call, not the bytes, is what costs, one per row).
`pair_uid_words` computes it for Arrow columns as two 64-bit halves (high, low), which is how
the job carries, sorts and partitions it; `uid_strings` turns halves into the 32-digit column of
the curated files.
"""
from __future__ import annotations

import binascii
import itertools

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

UID_CHARS = 32


def pair_uid(url: str, caption: str) -> str:
    """32 hex digits of XXH3-128 over url and caption (a separator byte neither can contain)."""
    return xxhash.xxh3_128_hexdigest(f"{url}\x00{caption}".encode("utf-8", "surrogatepass"))


def pair_uid_words(urls: pa.Array, captions: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(high, low) 64-bit halves of pair_uid of every (url, caption) of two string columns."""
    joined = pc.binary_join_element_wise(urls, captions, "\x00")
    if isinstance(joined, pa.ChunkedArray):
        joined = joined.combine_chunks()
    n = len(joined)
    if n == 0:
        return np.zeros(0, np.uint64), np.zeros(0, np.uint64)
    if joined.null_count:
        raise ValueError("pair_uid_words: urls and captions must not be null")
    offsets = np.frombuffer(joined.buffers()[1], dtype=np.int32)[joined.offset:joined.offset + n + 1].tolist()
    # One call per row on slices of the column's own buffer: no Python string per row.
    data = memoryview(joined.buffers()[2])
    digest = xxhash.xxh3_128_digest
    raw = b"".join([digest(data[start:end]) for start, end in itertools.pairwise(offsets)])
    words = np.frombuffer(raw, dtype=">u8").reshape(n, 2).astype(np.uint64)
    return words[:, 0].copy(), words[:, 1].copy()


def uid_strings(high: np.ndarray, low: np.ndarray) -> pa.StringArray:
    """The 32-hex-digit uids of (high, low) halves, as one string array."""
    n = len(high)
    words = np.empty((n, 2), dtype=">u8")
    words[:, 0], words[:, 1] = high, low
    return _fixed_width_strings(binascii.b2a_hex(words.tobytes()), n, UID_CHARS)


def _fixed_width_strings(data: bytes, n: int, width: int) -> pa.StringArray:
    offsets = np.arange(0, width * (n + 1), width, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))


def first_occurrences(high: np.ndarray, low: np.ndarray) -> np.ndarray:
    """Mask of the first row of each uid, given as its (high, low) halves, in the rows' order."""
    # A stable sort on the uid alone: equal uids keep their order, so the first of each run of
    # equal uids in sorted order is the first in row order.
    order = np.lexsort((low, high))
    high, low = high[order], low[order]
    starts = np.ones(len(order), dtype=bool)
    starts[1:] = (high[1:] != high[:-1]) | (low[1:] != low[:-1])
    mask = np.zeros(len(order), dtype=bool)
    mask[order[starts]] = True
    return mask
