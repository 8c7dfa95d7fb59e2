"""Exact dedup of (url, caption) pairs.

A pair's uid is a hash of both strings, so the same image with another caption (or the same
caption on another image) stays. Of several copies the first by (source file, source row) is kept,
a rule that does not depend on the order rows reach a worker, so every runner keeps the same copy.

The uid is 32 hex digits: BLAKE2b-128 of the UTF-8 bytes of `url + "\\x00" + caption`
(`pair_uid`). `pair_uids` computes the same for Arrow columns; the rest works on a uid column as
its two 64-bit halves (`uid_words`), parsed from the hex in one step, never one uid at a time.
"""
from __future__ import annotations

import binascii
import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

UID_CHARS = 32


def pair_uid(url: str, caption: str) -> str:
    """32 hex digits of BLAKE2b over url and caption (a separator byte neither can contain)."""
    digest = hashlib.blake2b(f"{url}\x00{caption}".encode("utf-8", "surrogatepass"), digest_size=16)
    return digest.hexdigest()


def pair_uids(urls: pa.Array, captions: pa.Array) -> pa.StringArray:
    """pair_uid of every (url, caption) of two string columns, as one string array."""
    joined = pc.binary_join_element_wise(urls, captions, "\x00").cast(pa.binary()).to_pylist()
    blake2b = hashlib.blake2b
    hexed = binascii.b2a_hex(b"".join([blake2b(pair, digest_size=16).digest() for pair in joined]))
    return _fixed_width_strings(hexed, len(joined), UID_CHARS)


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
    n = len(high)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    # A sort on (uid, source file, source row), vectorised: the uid as its two halves, the file
    # as its rank among the distinct files.
    files = pa.array(source_files, pa.string()) if isinstance(source_files, list) else source_files
    names = pc.unique(files)
    names = names.take(pc.sort_indices(names))
    file_rank = pc.index_in(files, value_set=names).to_numpy()
    order = np.lexsort((np.asarray(source_rows, dtype=np.int64), file_rank, low, high))
    high, low = high[order], low[order]
    first = np.ones(n, dtype=bool)
    first[1:] = (high[1:] != high[:-1]) | (low[1:] != low[:-1])
    return order[first]


def first_copies(uids, source_files, source_rows) -> np.ndarray:
    """Mask of the rows to keep: for each uid, the row with the smallest (source file, row)."""
    firsts = first_copies_by_uid(uids, source_files, source_rows)
    keep = np.zeros(len(source_rows), dtype=bool)
    keep[firsts] = True
    return keep
