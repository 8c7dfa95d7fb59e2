"""Exact dedup of (url, caption) pairs.

A pair's uid is a hash of both strings, so the same image with another caption (or the same
caption on another image) stays. Of several copies the first by (source file, source row) is kept,
a rule that does not depend on the order rows reach a worker, so every runner keeps the same copy.

The uid is 32 hex digits: XXH3-128 (xxhash) of the UTF-8 bytes of `url + "\\x00" + caption`
(`pair_uid`), big-endian. A uid only has to tell pairs apart, so a fast non-cryptographic hash
serves: 128 bits make an accidental collision among 10^12 pairs about a 10^-15 chance, and XXH3
costs a fifth of BLAKE2b's time here (the call, not the bytes, is what costs, one per row).
`pair_uid_words` computes it for Arrow columns as two 64-bit halves (high, low), which is how
the job carries, sorts and partitions it; `uid_strings` turns halves into the 32-digit column of
the curated files, and `uid_words` parses such a column back.
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


def pair_uids(urls: pa.Array, captions: pa.Array) -> pa.StringArray:
    """pair_uid of every (url, caption) of two string columns, as one string array."""
    return uid_strings(*pair_uid_words(urls, captions))


def uid_strings(high: np.ndarray, low: np.ndarray) -> pa.StringArray:
    """The 32-hex-digit uids of (high, low) halves, as one string array."""
    n = len(high)
    words = np.empty((n, 2), dtype=">u8")
    words[:, 0], words[:, 1] = high, low
    return _fixed_width_strings(binascii.b2a_hex(words.tobytes()), n, UID_CHARS)


def _fixed_width_strings(data: bytes, n: int, width: int) -> pa.StringArray:
    offsets = np.arange(0, width * (n + 1), width, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))


def uid_hash(uid: str) -> int:
    """The uid's first 64 bits, as the integer balancing draws and partitioning use."""
    return int(uid[:16], 16)


def uid_words(uids) -> tuple[np.ndarray, np.ndarray]:
    """(high, low) 64-bit halves of each uid (a string column or a list of uids)."""
    uids = pa.array(uids, pa.string()) if isinstance(uids, list) else uids
    if isinstance(uids, pa.ChunkedArray):
        uids = uids.combine_chunks()
    n = len(uids)
    if n == 0:
        return np.zeros(0, np.uint64), np.zeros(0, np.uint64)
    offsets = np.frombuffer(uids.buffers()[1], dtype=np.int32)[uids.offset:uids.offset + n + 1]
    if uids.null_count or offsets[-1] - offsets[0] != UID_CHARS * n:
        raise ValueError("uids must be non-null strings of 32 hex digits")
    raw = binascii.a2b_hex(memoryview(uids.buffers()[2])[offsets[0]:offsets[-1]])
    words = np.frombuffer(raw, dtype=">u8").reshape(n, 2).astype(np.uint64)
    return words[:, 0], words[:, 1]


def uid_hashes(uids) -> np.ndarray:
    """uid_hash of every uid of a column."""
    return uid_words(uids)[0]


def uid_order(uids) -> np.ndarray:
    """Indices that sort the uids (as their hex strings sort)."""
    high, low = uid_words(uids)
    return np.lexsort((low, high))


def first_copies_by_uid(uids, source_files, source_rows) -> np.ndarray:
    """Indices of the rows to keep, in uid order: for each uid, the row with the smallest
    (source file, source row)."""
    high, low = uid_words(uids)
    if len(high) == 0:
        return np.zeros(0, dtype=np.int64)
    # A sort on (uid, source file, source row), vectorised: the uid as its two halves, the file
    # as its rank among the distinct files.
    files = pa.array(source_files, pa.string()) if isinstance(source_files, list) else source_files
    names = pc.unique(files)
    names = names.take(pc.sort_indices(names))
    file_rank = pc.index_in(files, value_set=names).to_numpy()
    order = np.lexsort((np.asarray(source_rows, dtype=np.int64), file_rank, low, high))
    return _first_of_each_uid(order, high, low)


def first_occurrences(high: np.ndarray, low: np.ndarray) -> np.ndarray:
    """Mask of the first row of each uid, given as its (high, low) halves, in the rows' order."""
    mask = np.zeros(len(high), dtype=bool)
    # A stable sort on the uid alone: equal uids keep their order.
    mask[_first_of_each_uid(np.lexsort((low, high)), high, low)] = True
    return mask


def _first_of_each_uid(order: np.ndarray, high: np.ndarray, low: np.ndarray) -> np.ndarray:
    """Of the rows in `order` (sorted by uid first), the first row of each uid."""
    high, low = high[order], low[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = (high[1:] != high[:-1]) | (low[1:] != low[:-1])
    return order[first]


def first_copies(uids, source_files, source_rows) -> np.ndarray:
    """Mask of the rows to keep: for each uid, the row with the smallest (source file, row)."""
    firsts = first_copies_by_uid(uids, source_files, source_rows)
    keep = np.zeros(len(source_rows), dtype=bool)
    keep[firsts] = True
    return keep
