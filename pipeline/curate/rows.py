"""The curate job's steps as plain functions over Arrow tables (no Beam): what a worker does to
its rows: match, key by partition, keep the first copy of each pair, count, balance. The Beam
steps (steps.py) call them."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa

from clipdata.pipeline.curate import pair_dedup, text, work_files
from clipdata.pipeline.foundation import balance

DROPPED_SCHEMA = pa.schema(
    [("source_file", pa.string()), ("source_row", pa.int64()), ("reason", pa.string())]
)


def _dropped(batch: pa.RecordBatch | pa.Table, reason: str | None = None) -> pa.Table:
    """The (source file, source row, reason) of dropped rows: the row itself stays in the pool."""
    n = batch.num_rows
    reasons = batch.column("reason") if reason is None else pa.repeat(pa.scalar(reason, pa.string()), n)
    return pa.Table.from_arrays([batch.column("source_file"), batch.column("source_row"), reasons],
                                schema=DROPPED_SCHEMA)


# Matched pairs between the steps: the pool's columns but the file (one per piece, carried by
# the runner beside the rows' work file), the uid as its two 64-bit halves, the matched entries.
WORK_COLUMNS = ["url", "caption", "source_row", "page_url", "uid_high", "uid_low", "entry_ids"]


def match_rows(batch: pa.RecordBatch, matcher, max_caption_chars: int,
               patterns: tuple[str, str], languages: Counter | None = None) -> tuple[pa.Table, pa.Table]:
    """A pool batch -> (its pairs that match the list, in WORK_COLUMNS; the rest, as dropped rows
    with their reasons): clean the text, match the captions, hash the matched pairs. With a
    worldwide matcher, `languages` (a Counter) is added to: captions per language ("captions_<lang>")
    and matched captions per language ("matched_<lang>")."""
    kept, dropped = text.clean_batch(batch, max_caption_chars, patterns)
    drops = [_dropped(dropped)]
    if hasattr(matcher, "match_languages"):
        offsets, entry_ids, caption_languages = matcher.match_languages(kept.column("caption"))
        if languages is not None:
            matched = np.diff(offsets) > 0
            languages.update(f"captions_{language}" for language in caption_languages)
            languages.update(f"matched_{language}" for language, has in zip(caption_languages, matched) if has)
    else:
        offsets, entry_ids = matcher.match_batch(kept.column("caption"))
    has_match = np.diff(offsets) > 0
    table = pa.Table.from_batches([kept])
    if not has_match.all():
        drops.append(_dropped(table.filter(pa.array(~has_match)), "no-match"))
        table = table.filter(pa.array(has_match))
        offsets = np.concatenate([[0], np.cumsum(np.diff(offsets)[has_match])])
    high, low = pair_dedup.pair_uid_words(table.column("url"), table.column("caption"))
    return work_table(table, offsets, entry_ids, high, low), pa.concat_tables(drops)


def work_table(pairs: pa.Table | pa.RecordBatch, offsets: np.ndarray, entry_ids: np.ndarray,
               uid_high: np.ndarray, uid_low: np.ndarray) -> pa.Table:
    """Matched pairs in WORK_COLUMNS: their pool columns, uid halves and matches (CSR)."""
    ids = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(entry_ids, pa.int32()))
    columns = [pairs.column(name) for name in WORK_COLUMNS[:4]]
    return pa.Table.from_arrays([*columns, pa.array(uid_high), pa.array(uid_low), ids], names=WORK_COLUMNS)


def partition_of(uid_high: np.ndarray, partitions: int) -> np.ndarray:
    """A pair's partition: a function of its uid alone, so every copy of a pair meets in one."""
    return (uid_high % np.uint64(partitions)).astype(np.int64)


def partition_rows(tables: list[pa.Table], source_files: list[str]) -> pa.Table:
    """One partition's matched pairs, a table per piece of the pool, as one table in (source file,
    source row) order with a `source_file` column: the order the curated files keep, the same
    whatever order the pieces came in. (The pieces of one file are in row order already.)"""
    names = sorted(set(source_files))
    dictionary = pa.array(names, pa.string())
    rank = {name: i for i, name in enumerate(names)}
    order = sorted(range(len(tables)), key=lambda i: (source_files[i], tables[i].column("source_row")[0].as_py()
                                                       if tables[i].num_rows else 0))
    chunks = []
    for i in order:
        files = pa.DictionaryArray.from_arrays(pa.array(np.full(tables[i].num_rows, rank[source_files[i]], np.int32)),
                                               dictionary)
        chunks.append(tables[i].append_column("source_file", files))
    if not chunks:
        raise ValueError("partition_rows needs at least one table")
    return pa.concat_tables(chunks)


def read_partition_rows(refs: list[tuple[str, work_files.WorkRef]]) -> pa.Table:
    """partition_rows of a partition's (source file, WorkRef) references, read from the work files."""
    return partition_rows(work_files.read_partition([ref for _, ref in refs]), [source for source, _ in refs])


def keep_first_copies(rows: pa.Table) -> tuple[np.ndarray, pa.Table]:
    """Pairs in (source file, source row) order -> (mask of the first copy of each pair, the
    other copies as dropped rows)."""
    first = pair_dedup.first_occurrences(rows.column("uid_high").to_numpy(), rows.column("uid_low").to_numpy())
    copies = rows.filter(pa.array(~first)) if not first.all() else rows.slice(0, 0)
    return first, _dropped(_string_files(copies), "duplicate")


def _string_files(table: pa.Table) -> pa.Table:
    column = table.schema.get_field_index("source_file")
    return table.set_column(column, "source_file", table.column(column).cast(pa.string()))


def _flat_entry_ids(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    column = table.column("entry_ids").combine_chunks()
    offsets = column.offsets.to_numpy()
    return offsets - offsets[0], column.flatten().to_numpy()


def entry_counts(table: pa.Table, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(entry ids, pairs matching each) over the table's rows where `rows` (a mask) is true, for
    the entries with at least one pair."""
    offsets, entry_ids = _flat_entry_ids(table)
    if rows is not None:
        entry_ids = entry_ids[np.repeat(rows, np.diff(offsets))]
    counts = np.bincount(entry_ids)
    ids = np.flatnonzero(counts)
    return ids, counts[ids]


def balance_partition(rows: pa.Table, distinct: np.ndarray, counts: np.ndarray, max_per_entry,
                      seed: int) -> tuple[pa.Table, pa.Table]:
    """A partition's pairs and the mask of the distinct ones -> (the distinct pairs balancing
    keeps, the other distinct pairs as dropped rows), given the pool's count of distinct pairs
    per entry."""
    offsets, entry_ids = _flat_entry_ids(rows)
    keep = balance.keep_mask(rows.column("uid_high").to_numpy(), offsets, entry_ids, counts, max_per_entry, seed)
    out = _dropped(_string_files(rows.filter(pa.array(distinct & ~keep))), "balanced-out")
    kept = distinct & keep
    return (rows if kept.all() else rows.filter(pa.array(kept))), out


CURATED_COLUMNS = ["uid", "url", "caption", "entry_ids", "source_file", "source_row", "page_url"]


def curated_table(pairs: pa.Table, ranges: list[tuple[str, int, int]] | None = None) -> pa.Table:
    """Pairs in WORK_COLUMNS (+ source_file) -> the curated files' columns, uid as 32 hex digits;
    with a worldwide list's `ranges` ((language, first id, end id) per list), a `language` column:
    the list its entries come from."""
    uids = pair_dedup.uid_strings(pairs.column("uid_high").to_numpy(), pairs.column("uid_low").to_numpy())
    table = _string_files(pairs).append_column("uid", uids)
    columns = list(CURATED_COLUMNS)
    if ranges is not None:
        table = table.append_column("language", pair_languages(table, ranges))
        columns.append("language")
    # One chunk per column: how the rows arrived must not change the file's bytes.
    return table.select(columns).combine_chunks()


def pair_languages(table: pa.Table, ranges: list[tuple[str, int, int]]) -> pa.Array:
    """The language of each pair: of its first entry id (a pair matches one language's list)."""
    offsets, entry_ids = _flat_entry_ids(table)
    first = entry_ids[np.minimum(offsets[:-1], max(len(entry_ids) - 1, 0))] if len(entry_ids) else np.zeros(0, np.int64)
    starts = np.array([start for _, start, _ in ranges], dtype=np.int64)
    names = pa.array([language for language, _, _ in ranges], pa.string())
    index = np.searchsorted(starts, first, side="right") - 1
    return pa.DictionaryArray.from_arrays(pa.array(index.astype(np.int32)), names).cast(pa.string())
