"""`clipdata curate`: from a web pool to matched, balanced, deduplicated (image URL, text) pairs.

CLIP's data recipe (section 2.2) as MetaCLIP's curation runs it, as one Beam job:

    pool files ─Reshuffle─► ReadPool ─► CleanText ─► MatchQueries ─► DedupPairs ─┬─► BalanceEntries ─► curated/
                               │            │             │              │        │
                               └────────────┴─────────────┴──────────────┴────────┴─► dropped/ (row, reason)
                                                          CountEntries (the one global step) ─┘

Rows travel as Arrow record batches, never one Python object per row, so the per-element cost of
the runner is paid per batch. The query-list automaton is built once per worker in setup().
DedupPairs hash-partitions pairs by uid; each partition is deduplicated, balanced and written as
`curated/part-PPPPP-of-KKKKK.parquet` sorted by uid, so the curated files are the same bytes on
any runner and any number of workers.

Every input row ends in exactly one place: a curated file, or dropped/ with its reason
(bad-url, empty-caption, caption-too-long, no-match, duplicate, balanced-out). A file that cannot
be read is named with its error in curate_stats.json; the rows read before the error stand.
"""
from __future__ import annotations

import datetime
import io
import json
import os
import uuid
from dataclasses import dataclass

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
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


class ReadPoolFn(beam.DoFn):
    """pool file -> record batches of (url, caption, source_file, source_row, page_url)."""

    def __init__(self, url_col: str, caption_col: str, batch_rows: int):
        self.url_col, self.caption_col, self.batch_rows = url_col, caption_col, batch_rows
        self.rows = Metrics.counter("curate", "rows_read")
        self.files = Metrics.counter("curate", "files_read")
        self.bad_files = Metrics.counter("curate", "files_unreadable")
        self.wat_counters: dict = {}

    def process(self, path):
        from clipdata.pipeline import wat

        stats = wat.WatStats()
        read = 0
        try:
            for batch in pool.read_pool_file(path, self.url_col, self.caption_col, self.batch_rows, wat_stats=stats):
                read += batch.num_rows
                self.rows.inc(batch.num_rows)
                yield batch
            self.files.inc()
        except (pool.PoolReadError, pool.MissingColumnError) as err:
            self.bad_files.inc()
            yield TaggedOutput("file_errors", {"file": path, "rows_read": read, "error": str(err)})
        for reason, n in stats.drops.items():
            if reason not in self.wat_counters:
                self.wat_counters[reason] = Metrics.counter("curate", f"wat_links_{reason}")
            self.wat_counters[reason].inc(n)


class CleanTextFn(beam.DoFn):
    """batch -> batch with cleaned captions and a uid per pair; bad rows to 'dropped'."""

    def __init__(self, max_caption_chars: int):
        self.max_caption_chars = max_caption_chars
        self.counters: dict = {}

    def process(self, batch):
        kept, dropped = text.clean_batch(batch, self.max_caption_chars)
        if dropped.num_rows:
            table = _dropped(dropped)
            _count_drops(self.counters, table)
            yield TaggedOutput("dropped", table)
        if kept.num_rows:
            urls = kept.column("url").to_pylist()
            captions = kept.column("caption").to_pylist()
            uids = pa.array([pair_dedup.pair_uid(u, c) for u, c in zip(urls, captions)], pa.string())
            yield pa.Table.from_batches([kept]).append_column("uid", uids)


class MatchQueriesFn(beam.DoFn):
    """table -> table with `entry_ids` (every matched entry); rows matching nothing to 'dropped'."""

    def __init__(self, queries: str, lowercase: bool):
        self.queries, self.lowercase = queries, lowercase
        self.matched = Metrics.counter("curate", "rows_matched")
        self.counters: dict = {}

    def setup(self):
        from clipdata.pipeline.match import Matcher

        self.matcher = Matcher(query_entries.load_entries(self.queries), lowercase=self.lowercase)

    def process(self, table):
        offsets, entry_ids = self.matcher.match_batch(table.column("caption").to_pylist())
        lengths = np.diff(offsets)
        has_match = lengths > 0
        if not has_match.all():
            table_dropped = _dropped(table.filter(pa.array(~has_match)), "no-match")
            _count_drops(self.counters, table_dropped)
            yield TaggedOutput("dropped", table_dropped)
        if has_match.any():
            ids = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(entry_ids, pa.int32()))
            matched = table.append_column("entry_ids", ids).filter(pa.array(has_match))
            self.matched.inc(matched.num_rows)
            yield matched


class PartitionByUidFn(beam.DoFn):
    """table -> (partition, table) pieces, the partition a function of the pair's uid alone."""

    def __init__(self, partitions: int):
        self.partitions = partitions

    def process(self, table):
        part = pair_dedup.uid_hashes(table.column("uid").to_pylist()) % np.uint64(self.partitions)
        for p in np.unique(part):
            yield int(p), table.filter(pa.array(part == p))


class KeepFirstCopyFn(beam.DoFn):
    """(partition, tables) -> (partition, table of distinct pairs sorted by uid); copies to 'dropped'."""

    def __init__(self):
        self.duplicates = Metrics.counter("curate", "dropped_duplicate")

    def process(self, keyed):
        partition, tables = keyed
        table = pa.concat_tables(list(tables))
        keep = pair_dedup.first_copies(
            table.column("uid").to_pylist(), table.column("source_file").to_pylist(),
            table.column("source_row").to_numpy(),
        )
        if not keep.all():
            copies = table.filter(pa.array(~keep))
            self.duplicates.inc(copies.num_rows)
            yield TaggedOutput("dropped", _dropped(copies, "duplicate"))
        distinct = table.filter(pa.array(keep))
        yield partition, distinct.take(pc.sort_indices(distinct, [("uid", "ascending")]))


def _flat_entry_ids(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    column = table.column("entry_ids").combine_chunks()
    offsets = column.offsets.to_numpy() - column.offsets[0].as_py()
    return offsets, column.values.to_numpy()


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
        hashes = pair_dedup.uid_hashes(table.column("uid").to_pylist())
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
    pq.write_table(table, sink, compression="zstd")
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
    def __init__(self, config: CurateConfig):
        super().__init__()
        self.config = config

    def expand(self, files):
        cfg = self.config
        return (
            files
            | "SpreadFiles" >> beam.Reshuffle()
            | "ReadFiles" >> beam.ParDo(ReadPoolFn(cfg.url_col, cfg.caption_col, cfg.batch_rows)).with_outputs(
                "file_errors", main="batches")
        )


class MatchedPairs(beam.PTransform):
    """Pool batches -> cleaned tables of pairs matching the list, with the rows dropped on the way."""

    def __init__(self, config: CurateConfig):
        super().__init__()
        self.config = config

    def expand(self, batches):
        cfg = self.config
        # Batches of one big file would otherwise stay on the worker that read it: spread them,
        # so cleaning and matching (the CPU-heavy steps) use every worker.
        cleaned = batches | "SpreadBatches" >> beam.Reshuffle() | "CleanText" >> beam.ParDo(
            CleanTextFn(cfg.max_caption_chars)).with_outputs(
            "dropped", main="tables")
        matched = cleaned.tables | "MatchQueries" >> beam.ParDo(
            MatchQueriesFn(cfg.queries, cfg.lowercase)).with_outputs("dropped", main="tables")
        return matched.tables, (cleaned.dropped, matched.dropped)


class DedupPairs(beam.PTransform):
    """Matched tables -> (partition, distinct pairs sorted by uid), and the duplicate copies."""

    def __init__(self, partitions: int):
        super().__init__()
        self.partitions = partitions

    def expand(self, tables):
        deduped = (
            tables
            | "PartitionByUid" >> beam.ParDo(PartitionByUidFn(self.partitions))
            | "GroupPartitions" >> beam.GroupByKey()
            | "KeepFirstCopy" >> beam.ParDo(KeepFirstCopyFn()).with_outputs("dropped", main="parts")
        )
        return deduped.parts, deduped.dropped


class BalanceEntries(beam.PTransform):
    """Distinct pairs -> the balanced subset, given the pool-wide count of pairs per entry."""

    def __init__(self, config: CurateConfig, n_entries: int):
        super().__init__()
        self.config, self.n_entries = config, n_entries

    def expand(self, parts):
        cfg = self.config
        matched_counts = (
            parts
            | "CountPerPart" >> beam.Map(lambda part: balance.entry_counts(_flat_entry_ids(part[1])[1], self.n_entries))
            | "CountEntries" >> beam.CombineGlobally(SumCounts(self.n_entries))
        )
        balanced = parts | "Balance" >> beam.ParDo(
            BalanceEntriesFn(cfg.max_per_entry, cfg.seed), AsSingleton(matched_counts)
        ).with_outputs("dropped", main="parts")
        return balanced.parts, balanced.dropped, matched_counts


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


def run_curate(config: CurateConfig, beam_args: list[str] | None = None) -> dict:
    """Run the job; write curated/, dropped/, entry_counts.parquet and curate_stats.json."""
    try:
        files = [f for pattern in config.pool for f in pool.list_pool_files(pattern)]
    except (FileNotFoundError, ValueError) as err:
        raise CurateError(str(err)) from err
    if not files:
        raise CurateError(f"no pool files in {config.pool}")
    preflight(config, files)
    queries = query_entries.load_entries(config.queries)
    n_entries = len(queries)
    partitions = config.partitions or max(16, len(files))
    curated_dir = FileSystems.join(config.output, "curated")
    dropped_dir = FileSystems.join(config.output, "dropped")
    for folder in (curated_dir, dropped_dir):
        _clear_folder(folder)
    matched_path = FileSystems.join(config.output, "_matched_counts.npy")
    kept_path = FileSystems.join(config.output, "_kept_counts.npy")
    errors_prefix = FileSystems.join(config.output, "_file_errors")

    p = beam_runner.make_pipeline(beam_args)
    read = p | "PoolFiles" >> beam.Create(files) | "ReadPool" >> ReadPool(config)
    matched, early_drops = read.batches | "MatchedPairs" >> MatchedPairs(config)
    distinct, duplicates = matched | "DedupPairs" >> DedupPairs(partitions)
    balanced, balanced_out, matched_counts = distinct | "BalanceEntries" >> BalanceEntries(config, n_entries)
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
        read.file_errors
        | "FormatFileErrors" >> beam.Map(json.dumps)
        | "WriteFileErrors" >> beam.io.WriteToText(errors_prefix, ".jsonl")
    )
    result = p.run()
    result.wait_until_finish()
    counters = beam_runner.counters(result)
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
