"""`clipdata curate`: from a web pool to matched, balanced, deduplicated (image URL, text) pairs.

CLIP's data recipe (section 2.2) as MetaCLIP's curation runs it, as one Beam job of three steps:

    pool files ─► SplitFiles ─► MatchPieces ──refs──► KeepFirstCopy ──refs──► BalanceAndWrite ─► curated/
                                 read, clean,  │      (per uid partition)  │        ▲     (per partition)
                                 match, hash   │             │             └─► SumCounts (the one
                                      │        ▼             ▼                 global step)
                                      └──► dropped/read-*  dropped/duplicate-*   dropped/balanced-out-*

MatchPieces reads a piece of the pool (whole row groups of a parquet file; a whole csv, jsonl or
WAT file, which cannot be cut), cleans the text, matches the captions and hashes each matched pair
to its uid, all fused batch by batch in one worker. Its matched pairs go to an Arrow IPC work
file, cut by uid partition (work_files.py); the runner carries only a reference per partition, so
no row is pickled or sent over Beam's data plane (which on 2 local workers cost more than
reading, cleaning and matching together). KeepFirstCopy reads a partition's rows from every
piece (memory-mapped), marks the later copies of each pair and counts the distinct pairs per
entry; those counts, summed over partitions, are the only global step; BalanceAndWrite reads the
partition again, draws each distinct pair against the counts and writes
`curated/part-PPPPP-of-KKKKK.parquet`, in (source file, source row) order: the same bytes on any
runner and any number of workers. The query-list matcher is built once, by the launcher, into a
file cached by the list's hash (see prepare_matcher), and loaded once per worker process in
setup(), shared by its threads.

Every input row ends in exactly one place: a curated file, or a file of dropped/ with its reason
(bad-url, empty-caption, caption-too-long, no-match, duplicate, balanced-out). A file (or a piece
of a parquet file) that cannot be read is named with its error in curate_stats.json; the rows read
before the error stand. The per-step logic is plain functions over Arrow tables (match_rows,
partition_rows, keep_first_copies, balance_partition, curated_table); the DoFns only read and
write around them.
"""
from __future__ import annotations

import datetime
import hashlib
import io
import json
import os
import uuid
from dataclasses import dataclass
from typing import Any, Tuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.pvalue import AsSingleton, TaggedOutput
from apache_beam.utils import shared

from clipdata.pipeline.curate import balance, pair_dedup, text, work_files
from clipdata.pipeline.foundation import beam_runner, folder_lock, pool
from clipdata.pipeline.foundation.storage import atomic_write, clear_folder
from clipdata.query_lists import entries as query_entries

DROPPED_SCHEMA = pa.schema(
    [("source_file", pa.string()), ("source_row", pa.int64()), ("reason", pa.string())]
)


class CurateError(Exception):
    """The inputs or options cannot give a correct curated set; the message says why."""


@dataclass
class CurateConfig:
    pool: list[str]
    queries: str
    output: str
    url_col: str = "url"
    caption_col: str = "caption"
    lowercase: bool = False
    max_per_entry: int = balance.DEFAULT_MAX_PER_ENTRY
    seed: int = 0
    max_caption_chars: int = text.MAX_CAPTION_CHARS
    partitions: int | None = None
    batch_rows: int = pool.DEFAULT_BATCH_ROWS
    # Where built matchers are kept between runs, by the query list's hash; None: build every run.
    matcher_cache: str | None = None


def _dropped(batch: pa.RecordBatch | pa.Table, reason: str | None = None) -> pa.Table:
    """The (source file, source row, reason) of dropped rows: the row itself stays in the pool."""
    n = batch.num_rows
    reasons = batch.column("reason") if reason is None else pa.repeat(pa.scalar(reason, pa.string()), n)
    return pa.Table.from_arrays([batch.column("source_file"), batch.column("source_row"), reasons],
                                schema=DROPPED_SCHEMA)


# ---------------------------------------------------------------------------------------------
# The steps as plain functions over Arrow tables (no Beam): what a worker does to its rows.

# Matched pairs between the steps: the pool's columns but the file (one per piece, carried by
# the runner beside the rows' work file), the uid as its two 64-bit halves, the matched entries.
WORK_COLUMNS = ["url", "caption", "source_row", "page_url", "uid_high", "uid_low", "entry_ids"]


def match_rows(batch: pa.RecordBatch, matcher, max_caption_chars: int,
               patterns: tuple[str, str]) -> tuple[pa.Table, pa.Table]:
    """A pool batch -> (its pairs that match the list, in WORK_COLUMNS; the rest, as dropped rows
    with their reasons): clean the text, match the captions, hash the matched pairs."""
    kept, dropped = text.clean_batch(batch, max_caption_chars, patterns)
    drops = [_dropped(dropped)]
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


def balance_partition(rows: pa.Table, distinct: np.ndarray, counts: np.ndarray, max_per_entry: int,
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


def curated_table(pairs: pa.Table) -> pa.Table:
    """Pairs in WORK_COLUMNS (+ source_file) -> the curated files' columns, uid as 32 hex digits."""
    uids = pair_dedup.uid_strings(pairs.column("uid_high").to_numpy(), pairs.column("uid_low").to_numpy())
    table = _string_files(pairs).append_column("uid", uids)
    # One chunk per column: how the rows arrived must not change the file's bytes.
    return table.select(CURATED_COLUMNS).combine_chunks()


# ---------------------------------------------------------------------------------------------
# Beam steps: thin layers over the functions above, pool, and work_files. Matched rows go from
# step to step in work files (see work_files.py); the runner carries references and counts.


def _count(counters: dict, name: str, n: int) -> None:
    if name not in counters:
        counters[name] = Metrics.counter("curate", name)
    counters[name].inc(int(n))


def _count_drops(counters: dict, table: pa.Table) -> None:
    for reason, n in zip(*np.unique(table.column("reason").to_numpy(zero_copy_only=False), return_counts=True)):
        _count(counters, f"dropped_{reason}", n)


def piece_name(piece: tuple[str, int, int]) -> str:
    """A name for a piece of a pool file, the same on every run and runner."""
    path, first_group, end_group = piece
    digest = hashlib.sha1(path.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{digest}-{first_group:06d}-{end_group:06d}"


class SplitFilesFn(beam.DoFn):
    """pool file -> (path, first row group, end row group) pieces; (path, 0, -1): the whole file."""

    def __init__(self, rows_per_piece: int):
        self.rows_per_piece = rows_per_piece
        self.files = Metrics.counter("curate", "files_read")

    def process(self, path):
        pieces = pool.pool_pieces(path, self.rows_per_piece)
        if pieces[0][2] >= 0:  # a parquet file whose footer was read
            self.files.inc()
        yield from pieces


class MatchPieceFn(beam.DoFn):
    """piece of a pool file -> its matched pairs in a work file, one (partition, (source file,
    WorkRef)) per partition they fall in; its other rows to dropped/read-<piece>.parquet; a file
    that cannot be read to <errors_dir>/<piece>.json. Read, clean, match and hash run fused,
    batch by batch."""

    def __init__(self, config: CurateConfig, matcher_path: str, patterns: tuple[str, str],
                 work_dir: str, dropped_dir: str, errors_dir: str, partitions: int):
        self.config, self.matcher_path, self.patterns = config, matcher_path, patterns
        self.work_dir, self.dropped_dir, self.errors_dir = work_dir, dropped_dir, errors_dir
        self.partitions = partitions
        self.counters: dict = {}
        # One matcher per worker process, not per DoFn instance: an SDK worker runs bundles on
        # several threads (12 on Dataflow, 2 with --direct_running_mode multi_threading), each
        # with its own instance, and a 500k-entry matcher is ~55 MB loaded in ~0.1 s.
        self.shared_matcher = shared.Shared()

    def setup(self):
        self.matcher = self.shared_matcher.acquire(self._load_matcher, tag=self.matcher_path)

    def _load_matcher(self):
        from clipdata.pipeline.curate.match import read_matcher_file

        with FileSystems.open(self.matcher_path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            return read_matcher_file(handle)[0]

    def process(self, piece):
        from clipdata.pipeline.foundation import wat

        cfg = self.config
        path, first_group, end_group = piece
        whole = end_group < 0
        name = piece_name(piece)
        stats = wat.WatStats()
        writer = work_files.PartitionWriter(work_files.unique_path(self.work_dir, f"matched-{name}"), self.partitions)
        drops = []
        read = 0
        try:
            for batch in pool.read_pool_file(path, cfg.url_col, cfg.caption_col, cfg.batch_rows, wat_stats=stats,
                                             row_groups=None if whole else (first_group, end_group)):
                read += batch.num_rows
                _count(self.counters, "rows_read", batch.num_rows)
                matched, dropped = match_rows(batch, self.matcher, cfg.max_caption_chars, self.patterns)
                _count(self.counters, "rows_matched", matched.num_rows)
                _count_drops(self.counters, dropped)
                drops.append(dropped)
                writer.write(matched, partition_of(matched.column("uid_high").to_numpy(), self.partitions))
            if whole:
                _count(self.counters, "files_read", 1)
        except (pool.PoolReadError, pool.MissingColumnError) as err:
            _count(self.counters, "files_unreadable", 1)
            error = {"file": path, "rows_read": read, "error": str(err)}
            atomic_write(FileSystems.join(self.errors_dir, f"{name}.json"), json.dumps(error).encode("utf-8"))
        for reason, n in stats.drops.items():
            _count(self.counters, f"wat_links_{reason}", n)
        atomic_write(FileSystems.join(self.dropped_dir, f"read-{name}.parquet"),
                         parquet_bytes(pa.concat_tables(drops) if drops else DROPPED_SCHEMA.empty_table()))
        for partition, ref in sorted(writer.close().items()):
            yield partition, (path, ref)


class KeepFirstCopyFn(beam.DoFn):
    """(partition, [(source file, WorkRef)]) -> (partition, (the refs, rows that are later copies
    of a pair)); to 'counts' the distinct pairs per entry; the copies to
    dropped/duplicate-<partition>.parquet."""

    def __init__(self, dropped_dir: str):
        self.dropped_dir = dropped_dir
        self.duplicates = Metrics.counter("curate", "dropped_duplicate")

    def process(self, keyed):
        partition, refs = keyed
        rows = read_partition_rows(refs)
        first, duplicates = keep_first_copies(rows)
        if duplicates.num_rows:
            self.duplicates.inc(duplicates.num_rows)
            atomic_write(FileSystems.join(self.dropped_dir, f"duplicate-{partition:05d}.parquet"),
                             parquet_bytes(duplicates))
        yield TaggedOutput("counts", entry_counts(rows, first))
        # The rows stay in their work files: the next step reads them again (memory-mapped).
        yield partition, (refs, np.flatnonzero(~first))


class SumCounts(beam.CombineFn):
    """Pairs per entry over the pool, from (entry ids, counts) pieces: one dense numpy array."""

    def __init__(self, n_entries: int):
        self.n_entries = n_entries

    def create_accumulator(self):
        return np.zeros(self.n_entries, dtype=np.int64)

    def add_input(self, total, sparse):
        ids, counts = sparse
        total[ids] += counts
        return total

    def merge_accumulators(self, accumulators):
        accumulators = iter(accumulators)
        total = next(accumulators)
        for other in accumulators:
            total += other
        return total

    def extract_output(self, total):
        return total


class BalanceAndWriteFn(beam.DoFn):
    """(partition, (refs, copies)) -> curated/part-PPPPP-of-KKKKK.parquet of the distinct pairs
    balancing keeps, the rest to dropped/balanced-out-PPPPP.parquet; yields the kept counts."""

    def __init__(self, config: CurateConfig, curated_dir: str, dropped_dir: str, partitions: int):
        self.config, self.curated_dir, self.dropped_dir, self.partitions = config, curated_dir, dropped_dir, partitions
        self.kept = Metrics.counter("curate", "rows_kept")
        self.balanced_out = Metrics.counter("curate", "dropped_balanced-out")

    def process(self, keyed, counts):
        partition, (refs, copies) = keyed
        rows = read_partition_rows(refs)  # in the same order as KeepFirstCopy's: partition_rows sorts
        distinct = np.ones(rows.num_rows, dtype=bool)
        distinct[copies] = False
        kept, out = balance_partition(rows, distinct, counts, self.config.max_per_entry, self.config.seed)
        if out.num_rows:
            self.balanced_out.inc(out.num_rows)
            atomic_write(FileSystems.join(self.dropped_dir, f"balanced-out-{partition:05d}.parquet"),
                             parquet_bytes(out))
        name = f"part-{partition:05d}-of-{self.partitions:05d}.parquet"
        atomic_write(FileSystems.join(self.curated_dir, name), parquet_bytes(curated_table(kept)))
        self.kept.inc(kept.num_rows)
        yield entry_counts(kept)


def parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    # Dictionary pages only where values repeat; for uids, URLs and captions they cost a third of
    # the write and save nothing.
    repeating = [c for c in ("source_file", "page_url") if c in table.column_names]
    pq.write_table(table, sink, compression="zstd", use_dictionary=repeating)
    return sink.getvalue()


# ---------------------------------------------------------------------------------------------
# The composite transforms: each reads like a sentence.


class MatchPool(beam.PTransform):
    """Pool files -> (partition, (source file, WorkRef)) references to matched pairs, spread
    over every worker piece by piece."""

    def __init__(self, config: CurateConfig, matcher_path: str, patterns: tuple[str, str],
                 work_dir: str, dropped_dir: str, errors_dir: str, partitions: int):
        super().__init__()
        self.match = MatchPieceFn(config, matcher_path, patterns, work_dir, dropped_dir, errors_dir, partitions)
        self.rows_per_piece = config.batch_rows

    def expand(self, files):
        return (
            files
            | "SplitFiles" >> beam.ParDo(SplitFilesFn(self.rows_per_piece)).with_output_types(Tuple[str, int, int])
            | "SpreadPieces" >> beam.Reshuffle()
            | "MatchPieces" >> beam.ParDo(self.match).with_output_types(Tuple[int, Any])
        )


class DedupPairs(beam.PTransform):
    """References -> (partition, (its references, which of its rows are later copies)), and the
    pool-wide count of distinct pairs per entry (the job's one global step: a combine of
    per-partition counts)."""

    def __init__(self, dropped_dir: str, n_entries: int):
        super().__init__()
        self.dropped_dir, self.n_entries = dropped_dir, n_entries

    def expand(self, refs):
        deduped = (
            refs
            | "GroupPartitions" >> beam.GroupByKey()
            | "KeepFirstCopy" >> beam.ParDo(KeepFirstCopyFn(self.dropped_dir)).with_output_types(
                Tuple[int, Any]).with_outputs("counts", main="parts")
        )
        counts = deduped.counts | "SumCounts" >> beam.CombineGlobally(SumCounts(self.n_entries))
        return deduped.parts, counts


class BalanceEntries(beam.PTransform):
    """Distinct pairs -> the balanced subset written as curated files, given the pool-wide count
    of pairs per entry; -> the pool-wide count of kept pairs per entry."""

    def __init__(self, config: CurateConfig, matched_counts, curated_dir: str, dropped_dir: str,
                 partitions: int, n_entries: int):
        super().__init__()
        self.write = BalanceAndWriteFn(config, curated_dir, dropped_dir, partitions)
        self.matched_counts, self.n_entries = matched_counts, n_entries

    def expand(self, parts):
        return (
            parts
            | "BalanceAndWrite" >> beam.ParDo(self.write, AsSingleton(self.matched_counts)).with_output_types(Any)
            | "SumKept" >> beam.CombineGlobally(SumCounts(self.n_entries))
        )


# ---------------------------------------------------------------------------------------------
# The driver.


def _write_counts(counts: np.ndarray, path: str) -> None:
    sink = io.BytesIO()
    np.save(sink, counts)
    atomic_write(path, sink.getvalue())


def _read_counts(path: str) -> np.ndarray:
    with FileSystems.open(path) as handle:
        return np.load(io.BytesIO(handle.read()))


def preflight(config: CurateConfig, files: list[str]) -> None:
    """Fail before the job starts on what would fail every file: a wrong column name."""
    first = next((f for f in files if pool.pool_format(f) != "wat"), None)
    if first is None:
        return
    try:
        next(iter(pool.read_pool_file(first, config.url_col, config.caption_col, batch_rows=16)), None)
    except pool.MissingColumnError as err:
        raise CurateError(f"{err} (set --url-col / --caption-col)") from err
    except pool.PoolReadError:
        pass  # one bad file is the job's to count, not a reason to stop


def default_cache_dir() -> str:
    """$CLIPDATA_CACHE, else ~/.cache/clipdata: built matchers and the ftfy shortcut's classes."""
    return os.environ.get("CLIPDATA_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "clipdata")


def prepare_matcher(config: CurateConfig, local: bool) -> tuple[pa.StringArray, str, bool]:
    """(entries as an Arrow array, matcher file for the workers, whether that file is this run's own,
    to delete).

    The matcher of a 500k-entry list takes seconds to build and milliseconds to load, so it is
    built once here, not in each worker, into `<matcher_cache>/matchers/<hash>.pkl`, the hash
    of the list file's bytes and of how they are read (match.matcher_file_key): a rerun with the
    same list skips the build and the list's checks. Workers on a cluster cannot see this
    machine's disk, so for any runner but the local one the file is copied into the output folder.
    """
    from clipdata.pipeline.curate import match

    with FileSystems.open(config.queries, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        list_bytes = handle.read()
    kind = f"json={query_entries.is_json_list(config.queries)} " \
           f"compression={CompressionTypes.detect_compression_type(config.queries)}"
    key = match.matcher_file_key(list_bytes, kind, config.lowercase)
    if config.matcher_cache:
        path = os.path.join(config.matcher_cache, "matchers", f"{key}.pkl")
    else:
        path = FileSystems.join(config.output, f"_matcher-{key}.pkl")
    if config.matcher_cache and os.path.exists(path):
        with open(path, "rb") as handle:
            queries = match.read_matcher_file(handle)[1]
    else:
        entries = query_entries.load_entries(config.queries)
        matcher = match.Matcher(entries, lowercase=config.lowercase)
        queries = pa.array(entries, pa.string())
        if config.matcher_cache:
            atomic_write(path, lambda handle: match.write_matcher_file(handle, matcher, queries))
        else:
            with FileSystems.create(path) as handle:
                match.write_matcher_file(handle, matcher, queries)
        del matcher
    if config.matcher_cache and not local:
        shipped = FileSystems.join(config.output, f"_matcher-{key}.pkl")
        with open(path, "rb") as source, FileSystems.create(shipped) as handle:
            handle.write(source.read())
        path = shipped
    return queries, path, path.startswith(config.output)


def fast_path_patterns(cache_dir: str | None) -> tuple[str, str]:
    """text.fast_path_patterns(), kept in the cache by ftfy and Unicode version (it takes 0.3 s)."""
    import unicodedata

    import ftfy

    if not cache_dir:
        return text.fast_path_patterns()
    path = os.path.join(cache_dir, f"ftfy-shortcut-v{text.FAST_PATH_VERSION}-{ftfy.__version__}-"
                                   f"{unicodedata.unidata_version}.json")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as handle:
            return tuple(json.load(handle))
    patterns = text.fast_path_patterns()
    atomic_write(path, lambda handle: handle.write(json.dumps(patterns).encode("utf-8")))
    return patterns


def run_curate(config: CurateConfig, beam_args: list[str] | None = None) -> dict:
    """Run the job; write curated/, dropped/, entry_counts.parquet and curate_stats.json."""
    try:
        files = [f for pattern in config.pool for f in pool.list_pool_files(pattern)]
    except (FileNotFoundError, ValueError) as err:
        raise CurateError(str(err)) from err
    if not files:
        raise CurateError(f"no pool files in {config.pool}")
    preflight(config, files)
    with folder_lock.writer_lock(config.output, "curate"):   # one writer per folder
        return _run_curate(config, files, beam_args)


def _run_curate(config: CurateConfig, files: list[str], beam_args: list[str] | None) -> dict:
    options = beam_runner.pipeline_options(beam_args)
    partitions = config.partitions or max(16, len(files))
    curated_dir = FileSystems.join(config.output, "curated")
    dropped_dir = FileSystems.join(config.output, "dropped")
    errors_dir = FileSystems.join(config.output, "_file_errors")
    for folder in (curated_dir, dropped_dir, errors_dir):
        clear_folder(folder)
    # A finished run's summary goes first: a run that fails must not leave one behind that makes
    # the emptied folders look complete (`clipdata build` resumes by it).
    for name in ("curate_stats.json", "entry_counts.parquet"):
        stale = FileSystems.join(config.output, name)
        if FileSystems.exists(stale):
            FileSystems.delete([stale])
    queries, matcher_path, temporary = prepare_matcher(config, beam_runner.uses_local_runner(options))
    n_entries = len(queries)
    patterns = fast_path_patterns(config.matcher_cache)
    matched_path = FileSystems.join(config.output, "_matched_counts.npy")
    kept_path = FileSystems.join(config.output, "_kept_counts.npy")

    work_dir = FileSystems.join(config.output, f"_work-{uuid.uuid4().hex[:8]}")

    p = beam_runner.make_pipeline(beam_args)
    refs = p | "PoolFiles" >> beam.Create(files) | "MatchPool" >> MatchPool(
        config, matcher_path, patterns, work_dir, dropped_dir, errors_dir, partitions)
    distinct, matched_counts = refs | "DedupPairs" >> DedupPairs(dropped_dir, n_entries)
    kept_counts = distinct | "BalanceEntries" >> BalanceEntries(
        config, matched_counts, curated_dir, dropped_dir, partitions, n_entries)
    matched_counts | "SaveMatchedCounts" >> beam.Map(_write_counts, matched_path).with_output_types(Any)
    kept_counts | "SaveKeptCounts" >> beam.Map(_write_counts, kept_path).with_output_types(Any)
    try:
        result = p.run()
        result.wait_until_finish()
    finally:
        work_files.delete_folder(work_dir)
    counters = beam_runner.counters(result)
    if temporary:
        FileSystems.delete([matcher_path])
    return finish(config, queries, counters, matched_path, kept_path, errors_dir, partitions)


def finish(config, queries, counters, matched_path, kept_path, errors_dir, partitions) -> dict:
    """Per-entry counts artifact and curate_stats.json, with the row accounting checked."""
    n_entries = len(queries)
    matched = _read_counts(matched_path) if FileSystems.exists(matched_path) else np.zeros(n_entries, np.int64)
    kept = _read_counts(kept_path) if FileSystems.exists(kept_path) else np.zeros(n_entries, np.int64)
    FileSystems.delete([p for p in (matched_path, kept_path) if FileSystems.exists(p)])
    entry_table = pa.table({
        "entry_id": pa.array(np.arange(n_entries), pa.int32()),
        "entry": queries,
        "matched": pa.array(matched, pa.int64()),
        "kept": pa.array(kept, pa.int64()),
    })
    atomic_write(FileSystems.join(config.output, "entry_counts.parquet"), parquet_bytes(entry_table))

    file_errors = []
    for match in FileSystems.match([FileSystems.join(errors_dir, "*.json")])[0].metadata_list:
        with FileSystems.open(match.path) as handle:
            file_errors.append(json.loads(handle.read().decode("utf-8")))
    work_files.delete_folder(errors_dir)
    file_errors.sort(key=lambda error: error["file"])

    dropped = {k[len("dropped_"):]: v for k, v in sorted(counters.items()) if k.startswith("dropped_")}
    rows_read = counters.get("rows_read", 0)
    rows_kept = counters.get("rows_kept", 0)
    accounted = rows_kept + sum(dropped.values())
    if accounted != rows_read:
        raise CurateError(f"row accounting is off: read {rows_read}, kept + dropped = {accounted} (a bug)")
    stats = {
        "rows_read": rows_read,
        "rows_matched": counters.get("rows_matched", 0),
        "rows_kept": rows_kept,
        "dropped": dropped,
        "files_read": counters.get("files_read", 0),
        "files_unreadable": file_errors,
        "wat_links_skipped": {k[len("wat_links_"):]: v for k, v in counters.items() if k.startswith("wat_links_")},
        "entries": n_entries,
        "entries_matched": int((matched > 0).sum()),
        "entries_kept": int((kept > 0).sum()),
        "entries_over_max": int((matched > config.max_per_entry).sum()),
        "max_per_entry": config.max_per_entry,
        "seed": config.seed,
        "lowercase": config.lowercase,
        "partitions": partitions,
        "pool": config.pool,
        "queries": config.queries,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    with FileSystems.create(FileSystems.join(config.output, "curate_stats.json")) as handle:
        handle.write(json.dumps(stats, indent=2).encode("utf-8"))
    return stats


def read_curated(output: str) -> pa.Table:
    """Every curated pair of a run, in file order (partition, then uid)."""
    paths = sorted(m.path for m in FileSystems.match([FileSystems.join(output, "curated", "*.parquet")])[0].metadata_list)
    tables = []
    for path in paths:
        with FileSystems.open(path) as handle:
            tables.append(pq.read_table(io.BytesIO(handle.read())))
    if not tables:
        return pa.table({c: pa.array([], t) for c, t in [("uid", pa.string()), ("url", pa.string()), ("caption", pa.string())]})
    return pa.concat_tables(tables)
