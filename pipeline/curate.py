"""`clipdata curate`: from a web pool to matched, balanced, deduplicated (image URL, text) pairs.

CLIP's data recipe (section 2.2) as MetaCLIP's curation runs it, as one Beam job:

    pool files ─► SplitFiles ─► ReadPieces ─► CleanText ─► MatchQueries ─► DedupPairs ─► BalanceEntries ─► curated/
                                                  │             │           │    │           ▲     │
                                                  │             │           │    └─► CountEntries  │
                                                  │             │           │   (the one global step)
                                                  └─────────────┴───────────┴──────────────────────┴─► dropped/
                                                                                               (row, reason)

Rows travel as Arrow record batches, never one Python object per row, so the per-element cost of
the runner is paid per batch. A parquet file is cut into pieces of whole row groups, so one big
file is read by every worker, and reading, cleaning, matching and partitioning a piece run fused
in one worker without its rows crossing a shuffle. (A csv, jsonl or WAT file cannot be cut: each
is one piece, and such a pool spreads over the workers file by file.) The query-list matcher is
built once, by the launcher, into a file cached by the list's hash (see prepare_matcher), and
loaded by each worker in setup().

DedupPairs hash-partitions pairs by uid, the job's one shuffle of whole rows; CountEntries counts
distinct pairs per entry from a third-size shuffle of (uid, entry ids) only, so each partition is
deduplicated, balanced and written in one worker step as `curated/part-PPPPP-of-KKKKK.parquet`,
sorted by uid: the curated files are the same bytes on any runner and any number of workers.

Every input row ends in exactly one place: a curated file, or dropped/ with its reason
(bad-url, empty-caption, caption-too-long, no-match, duplicate, balanced-out). A file (or a piece
of a parquet file) that cannot be read is named with its error in curate_stats.json; the rows read
before the error stand.
"""
from __future__ import annotations

import datetime
import io
import json
import os
import uuid
from dataclasses import dataclass
from typing import Any, Tuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.pvalue import AsSingleton, TaggedOutput

from clipdata.pipeline import balance, beam_runner, pair_dedup, pool, text
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
    reasons = batch.column("reason") if reason is None else pa.array([reason] * n, pa.string())
    return pa.Table.from_arrays([batch.column("source_file"), batch.column("source_row"), reasons],
                                schema=DROPPED_SCHEMA)


def _count_drops(counters: dict, table: pa.Table) -> None:
    for reason, n in zip(*np.unique(table.column("reason").to_numpy(zero_copy_only=False), return_counts=True)):
        if reason not in counters:
            counters[reason] = Metrics.counter("curate", f"dropped_{reason}")
        counters[reason].inc(int(n))


# ---------------------------------------------------------------------------------------------
# Beam steps: thin layers over pool / text / match / pair_dedup / balance.


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


class ReadPoolFn(beam.DoFn):
    """piece of a pool file -> record batches of (url, caption, source_file, source_row, page_url)."""

    def __init__(self, url_col: str, caption_col: str, batch_rows: int):
        self.url_col, self.caption_col, self.batch_rows = url_col, caption_col, batch_rows
        self.rows = Metrics.counter("curate", "rows_read")
        self.files = Metrics.counter("curate", "files_read")
        self.bad_files = Metrics.counter("curate", "files_unreadable")
        self.wat_counters: dict = {}

    def process(self, piece):
        from clipdata.pipeline import wat

        path, first_group, end_group = piece
        whole = end_group < 0
        stats = wat.WatStats()
        read = 0
        try:
            for batch in pool.read_pool_file(path, self.url_col, self.caption_col, self.batch_rows, wat_stats=stats,
                                             row_groups=None if whole else (first_group, end_group)):
                read += batch.num_rows
                self.rows.inc(batch.num_rows)
                yield batch
            if whole:
                self.files.inc()
        except (pool.PoolReadError, pool.MissingColumnError) as err:
            self.bad_files.inc()
            yield TaggedOutput("file_errors", {"file": path, "rows_read": read, "error": str(err)})
        for reason, n in stats.drops.items():
            if reason not in self.wat_counters:
                self.wat_counters[reason] = Metrics.counter("curate", f"wat_links_{reason}")
            self.wat_counters[reason].inc(n)


class CleanTextFn(beam.DoFn):
    """batch -> table with cleaned captions and a uid per pair; bad rows to 'dropped'."""

    def __init__(self, max_caption_chars: int, patterns: tuple[str, str]):
        self.max_caption_chars, self.patterns = max_caption_chars, patterns
        self.counters: dict = {}

    def process(self, batch):
        kept, dropped = text.clean_batch(batch, self.max_caption_chars, self.patterns)
        if dropped.num_rows:
            table = _dropped(dropped)
            _count_drops(self.counters, table)
            yield TaggedOutput("dropped", table)
        if kept.num_rows:
            uids = pair_dedup.pair_uids(kept.column("url"), kept.column("caption"))
            yield pa.Table.from_batches([kept]).append_column("uid", uids)


class MatchQueriesFn(beam.DoFn):
    """table -> table with `entry_ids` (every matched entry); rows matching nothing to 'dropped'."""

    def __init__(self, matcher_path: str):
        self.matcher_path = matcher_path
        self.matched = Metrics.counter("curate", "rows_matched")
        self.counters: dict = {}

    def setup(self):
        from clipdata.pipeline.match import read_matcher_file

        with FileSystems.open(self.matcher_path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            self.matcher, _ = read_matcher_file(handle)

    def process(self, table):
        offsets, entry_ids = self.matcher.match_batch(table.column("caption"))
        lengths = np.diff(offsets)
        has_match = lengths > 0
        if not has_match.all():
            table_dropped = _dropped(table.filter(pa.array(~has_match)), "no-match")
            _count_drops(self.counters, table_dropped)
            yield TaggedOutput("dropped", table_dropped)
        if has_match.any():
            ids = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(entry_ids, pa.int32()))
            matched = table.append_column("entry_ids", ids)
            if not has_match.all():
                matched = matched.filter(pa.array(has_match))
            self.matched.inc(matched.num_rows)
            yield matched


class PartitionByUidFn(beam.DoFn):
    """table -> (partition, table) pieces, the partition a function of the pair's uid alone; and
    to 'keys' the (partition, (uid, entry_ids)) pieces that CountEntries needs, a third the size."""

    def __init__(self, partitions: int):
        self.partitions = partitions

    def process(self, table):
        high, low = pair_dedup.uid_words(table.column("uid"))
        part = high % np.uint64(self.partitions)
        # Rows cross the shuffle pickled: one file name per piece, not one per row.
        column = table.schema.get_field_index("source_file")
        table = table.set_column(column, "source_file", pc.dictionary_encode(table.column(column)))
        keys = pa.table({"uid_high": high, "uid_low": low, "entry_ids": table.column("entry_ids")})
        # Rows by partition, then one take per partition (a slice would pickle its whole parent).
        order = np.argsort(part, kind="stable")
        bounds = np.searchsorted(part[order], np.arange(self.partitions + 1))
        for p in np.flatnonzero(np.diff(bounds)):
            rows = order[bounds[p]:bounds[p + 1]]
            yield int(p), table.take(rows)
            yield TaggedOutput("keys", (int(p), keys.take(rows)))


class CountDistinctFn(beam.DoFn):
    """(partition, key tables) -> pairs per entry, each distinct uid counted once."""

    def __init__(self, n_entries: int):
        self.n_entries = n_entries

    def process(self, keyed):
        table = pa.concat_tables(list(keyed[1]))
        high, low = table.column("uid_high").to_numpy(), table.column("uid_low").to_numpy()
        order = np.lexsort((low, high))
        first = np.ones(len(order), dtype=bool)
        first[1:] = (high[order][1:] != high[order][:-1]) | (low[order][1:] != low[order][:-1])
        once = np.zeros(len(order), dtype=bool)
        once[order[first]] = True
        # Copies of a pair share its caption, hence its entries: any copy stands for the pair.
        offsets, entry_ids = _flat_entry_ids(table)
        yield balance.entry_counts(entry_ids[np.repeat(once, np.diff(offsets))], self.n_entries)


class KeepFirstCopyFn(beam.DoFn):
    """(partition, tables) -> (partition, table of distinct pairs sorted by uid); copies to 'dropped'."""

    def __init__(self):
        self.duplicates = Metrics.counter("curate", "dropped_duplicate")

    def process(self, keyed):
        partition, tables = keyed
        table = pa.concat_tables(list(tables))
        column = table.schema.get_field_index("source_file")
        table = table.set_column(column, "source_file", table.column(column).cast(pa.string()))
        firsts = pair_dedup.first_copies_by_uid(table.column("uid"), table.column("source_file"),
                                                table.column("source_row").to_numpy())
        if len(firsts) < table.num_rows:
            copy = np.ones(table.num_rows, dtype=bool)
            copy[firsts] = False
            copies = table.filter(pa.array(copy))
            self.duplicates.inc(copies.num_rows)
            yield TaggedOutput("dropped", _dropped(copies, "duplicate"))
        yield partition, table.take(firsts)


def _flat_entry_ids(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    column = table.column("entry_ids").combine_chunks()
    offsets = column.offsets.to_numpy()
    return offsets - offsets[0], column.flatten().to_numpy()


class SumCounts(beam.CombineFn):
    """Element-wise sum of per-batch entry-count arrays."""

    def __init__(self, n_entries: int):
        self.n_entries = n_entries

    def create_accumulator(self):
        return np.zeros(self.n_entries, dtype=np.int64)

    def add_input(self, total, counts):
        total += counts
        return total

    def merge_accumulators(self, accumulators):
        accumulators = iter(accumulators)
        total = next(accumulators)
        for other in accumulators:
            total += other
        return total

    def extract_output(self, total):
        return total


class BalanceEntriesFn(beam.DoFn):
    """(partition, table) -> (partition, kept table); the rest to 'dropped' as balanced-out."""

    def __init__(self, max_per_entry: int, seed: int):
        self.max_per_entry, self.seed = max_per_entry, seed
        self.kept = Metrics.counter("curate", "rows_kept")
        self.balanced_out = Metrics.counter("curate", "dropped_balanced-out")

    def process(self, keyed, counts):
        partition, table = keyed
        offsets, entry_ids = _flat_entry_ids(table)
        hashes = pair_dedup.uid_hashes(table.column("uid"))
        keep = balance.keep_mask(hashes, offsets, entry_ids, counts, self.max_per_entry, self.seed)
        if not keep.all():
            out = table.filter(pa.array(~keep))
            self.balanced_out.inc(out.num_rows)
            yield TaggedOutput("dropped", _dropped(out, "balanced-out"))
        kept = table.filter(pa.array(keep))
        self.kept.inc(kept.num_rows)
        yield partition, kept


CURATED_COLUMNS = ["uid", "url", "caption", "entry_ids", "source_file", "source_row", "page_url"]


def write_atomically(path: str, data: bytes) -> None:
    """Write to a temporary name beside `path`, then rename: readers never see half a file."""
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with FileSystems.create(tmp) as handle:
        handle.write(data)
    FileSystems.rename([tmp], [path])


def parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    # Dictionary pages only where values repeat; for uids, URLs and captions they cost a third of
    # the write and save nothing.
    repeating = [c for c in ("source_file", "page_url") if c in table.column_names]
    pq.write_table(table, sink, compression="zstd", use_dictionary=repeating)
    return sink.getvalue()


class WriteCuratedFn(beam.DoFn):
    """(partition, table) -> curated/part-PPPPP-of-KKKKK.parquet; yields the file's entry counts."""

    def __init__(self, folder: str, partitions: int, n_entries: int):
        self.folder, self.partitions, self.n_entries = folder, partitions, n_entries

    def process(self, keyed):
        partition, table = keyed
        name = f"part-{partition:05d}-of-{self.partitions:05d}.parquet"
        # One chunk per column: how the partition's pieces arrived (which depends on the number of
        # workers) must not change the file's bytes.
        curated = table.select(CURATED_COLUMNS).combine_chunks()
        write_atomically(FileSystems.join(self.folder, name), parquet_bytes(curated))
        yield balance.entry_counts(_flat_entry_ids(table)[1], self.n_entries)


# ---------------------------------------------------------------------------------------------
# The composite transforms: each reads like a sentence.


class ReadPool(beam.PTransform):
    """Pool files -> record batches, read by every worker; and the files that failed."""

    def __init__(self, config: CurateConfig):
        super().__init__()
        self.config = config

    def expand(self, files):
        cfg = self.config
        read = (
            files
            | "SpreadFiles" >> beam.Reshuffle()
            | "SplitFiles" >> beam.ParDo(SplitFilesFn(cfg.batch_rows))
            | "SpreadPieces" >> beam.Reshuffle()
            | "ReadPieces" >> beam.ParDo(ReadPoolFn(cfg.url_col, cfg.caption_col, cfg.batch_rows)).with_outputs(
                "file_errors", main="batches")
        )
        return read.batches, read.file_errors


class MatchedPairs(beam.PTransform):
    """Pool batches -> cleaned tables of pairs matching the list, with the rows dropped on the way."""

    def __init__(self, config: CurateConfig, matcher_path: str, patterns: tuple[str, str]):
        super().__init__()
        self.config, self.matcher_path, self.patterns = config, matcher_path, patterns

    def expand(self, batches):
        cleaned = batches | "CleanText" >> beam.ParDo(
            CleanTextFn(self.config.max_caption_chars, self.patterns)).with_outputs("dropped", main="tables")
        matched = cleaned.tables | "MatchQueries" >> beam.ParDo(
            MatchQueriesFn(self.matcher_path)).with_outputs("dropped", main="tables")
        return matched.tables, (cleaned.dropped, matched.dropped)


class DedupPairs(beam.PTransform):
    """Matched tables -> (partition, distinct pairs sorted by uid), the duplicate copies, and the
    (partition, (uid, entry_ids)) keys of every pair for CountEntries."""

    def __init__(self, partitions: int):
        super().__init__()
        self.partitions = partitions

    def expand(self, tables):
        # (The output type, which Beam cannot infer past the tagged output, is what GroupByKey checks.)
        pieces = tables | "PartitionByUid" >> beam.ParDo(PartitionByUidFn(self.partitions)).with_output_types(
            Tuple[int, Any]).with_outputs("keys", main="pieces")
        deduped = (
            pieces.pieces
            | "GroupPartitions" >> beam.GroupByKey()
            | "KeepFirstCopy" >> beam.ParDo(KeepFirstCopyFn()).with_outputs("dropped", main="parts")
        )
        return deduped.parts, deduped.dropped, pieces.keys


class CountEntries(beam.PTransform):
    """(partition, keys) -> the pool-wide count of distinct pairs per entry (one numpy array)."""

    def __init__(self, n_entries: int):
        super().__init__()
        self.n_entries = n_entries

    def expand(self, keys):
        return (
            keys
            | "GroupKeys" >> beam.GroupByKey()
            | "CountPerPart" >> beam.ParDo(CountDistinctFn(self.n_entries))
            | "SumParts" >> beam.CombineGlobally(SumCounts(self.n_entries))
        )


class BalanceEntries(beam.PTransform):
    """Distinct pairs -> the balanced subset, given the pool-wide count of pairs per entry.

    Balancing runs in the same worker step as KeepFirstCopy (it only waits for the counts), so the
    distinct pairs never cross the runner again."""

    def __init__(self, config: CurateConfig, matched_counts):
        super().__init__()
        self.config, self.matched_counts = config, matched_counts

    def expand(self, parts):
        cfg = self.config
        balanced = parts | "Balance" >> beam.ParDo(
            BalanceEntriesFn(cfg.max_per_entry, cfg.seed), AsSingleton(self.matched_counts)
        ).with_outputs("dropped", main="parts")
        return balanced.parts, balanced.dropped


# ---------------------------------------------------------------------------------------------
# The driver.


def _write_counts(counts: np.ndarray, path: str) -> None:
    sink = io.BytesIO()
    np.save(sink, counts)
    write_atomically(path, sink.getvalue())


def _read_counts(path: str) -> np.ndarray:
    with FileSystems.open(path) as handle:
        return np.load(io.BytesIO(handle.read()))


def _clear_folder(folder: str) -> None:
    if FileSystems.exists(folder):
        stale = [m.path for m in FileSystems.match([FileSystems.join(folder, "*")])[0].metadata_list]
        if stale:
            FileSystems.delete(stale)
    else:
        FileSystems.mkdirs(folder)


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


def _write_local_atomically(path: str, write) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with open(tmp, "wb") as handle:
        write(handle)
    os.replace(tmp, path)


def prepare_matcher(config: CurateConfig, local: bool) -> tuple[list[str], str, bool]:
    """(entries, matcher file for the workers, whether that file is this run's own, to delete).

    The matcher of a 500k-entry list takes seconds to build and milliseconds to load, so it is
    built once here, not in each worker, into `<matcher_cache>/matchers/<hash>.pkl`, the hash
    of the list file's bytes and of how they are read (match.matcher_file_key): a rerun with the
    same list skips the build and the list's checks. Workers on a cluster cannot see this
    machine's disk, so for any runner but the local one the file is copied into the output folder.
    """
    from clipdata.pipeline import match

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
            queries = match.read_matcher_file(handle)[1].to_pylist()
    else:
        queries = query_entries.load_entries(config.queries)
        matcher = match.Matcher(queries, lowercase=config.lowercase)
        if config.matcher_cache:
            _write_local_atomically(path, lambda handle: match.write_matcher_file(handle, matcher, queries))
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
    _write_local_atomically(path, lambda handle: handle.write(json.dumps(patterns).encode("utf-8")))
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
    options = beam_runner.pipeline_options(beam_args)
    partitions = config.partitions or max(16, len(files))
    curated_dir = FileSystems.join(config.output, "curated")
    dropped_dir = FileSystems.join(config.output, "dropped")
    for folder in (curated_dir, dropped_dir):
        _clear_folder(folder)
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
    errors_prefix = FileSystems.join(config.output, "_file_errors")

    p = beam_runner.make_pipeline(beam_args)
    read = p | "PoolFiles" >> beam.Create(files) | "ReadPool" >> ReadPool(config)
    batches, file_errors = read
    matched, early_drops = batches | "MatchedPairs" >> MatchedPairs(config, matcher_path, patterns)
    distinct, duplicates, keys = matched | "DedupPairs" >> DedupPairs(partitions)
    matched_counts = keys | "CountEntries" >> CountEntries(n_entries)
    balanced, balanced_out = distinct | "BalanceEntries" >> BalanceEntries(config, matched_counts)
    kept_counts = (
        balanced
        | "WriteCurated" >> beam.ParDo(WriteCuratedFn(curated_dir, partitions, n_entries))
        | "SumKept" >> beam.CombineGlobally(SumCounts(n_entries))
    )
    matched_counts | "SaveMatchedCounts" >> beam.Map(_write_counts, matched_path)
    kept_counts | "SaveKeptCounts" >> beam.Map(_write_counts, kept_path)
    (
        (*early_drops, duplicates, balanced_out)
        | "AllDrops" >> beam.Flatten()
        | "WriteDropped" >> beam.io.parquetio.WriteToParquetBatched(
            FileSystems.join(dropped_dir, "dropped"), DROPPED_SCHEMA, codec="zstd", file_name_suffix=".parquet")
    )
    (
        file_errors
        | "FormatFileErrors" >> beam.Map(json.dumps)
        | "WriteFileErrors" >> beam.io.WriteToText(errors_prefix, ".jsonl")
    )
    result = p.run()
    result.wait_until_finish()
    counters = beam_runner.counters(result)
    if temporary:
        FileSystems.delete([matcher_path])
    return finish(config, queries, counters, matched_path, kept_path, errors_prefix, partitions)


def finish(config, queries, counters, matched_path, kept_path, errors_prefix, partitions) -> dict:
    """Per-entry counts artifact and curate_stats.json, with the row accounting checked."""
    n_entries = len(queries)
    matched = _read_counts(matched_path) if FileSystems.exists(matched_path) else np.zeros(n_entries, np.int64)
    kept = _read_counts(kept_path) if FileSystems.exists(kept_path) else np.zeros(n_entries, np.int64)
    FileSystems.delete([p for p in (matched_path, kept_path) if FileSystems.exists(p)])
    entry_table = pa.table({
        "entry_id": pa.array(np.arange(n_entries), pa.int32()),
        "entry": pa.array(queries, pa.string()),
        "matched": pa.array(matched, pa.int64()),
        "kept": pa.array(kept, pa.int64()),
    })
    write_atomically(FileSystems.join(config.output, "entry_counts.parquet"), parquet_bytes(entry_table))

    file_errors = []
    for match in FileSystems.match([errors_prefix + "*"])[0].metadata_list:
        with FileSystems.open(match.path) as handle:
            file_errors += [json.loads(line) for line in handle.read().decode("utf-8").splitlines() if line]
        FileSystems.delete([match.path])

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
