"""The curate job's Beam steps: thin layers over rows.py, pool and work_files. Matched rows go from
step to step in work files (see work_files.py); the runner carries references and counts."""
from __future__ import annotations

import collections
import hashlib
import io
import json
from typing import TYPE_CHECKING, Any, Tuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.pvalue import AsSingleton, TaggedOutput
from apache_beam.utils import shared

from clipdata.pipeline.curate import progress, work_files
from clipdata.pipeline.curate.rows import (DROPPED_SCHEMA, balance_partition, curated_table, entry_counts,
                                           keep_first_copies, match_rows, partition_of, read_partition_rows)
from clipdata.pipeline.foundation import balance, pool
from clipdata.pipeline.foundation.storage import atomic_write

if TYPE_CHECKING:
    from clipdata.pipeline.curate.job import CurateConfig


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
        read = n_matched = 0
        languages: collections.Counter = collections.Counter()   # a worldwide list's captions and matches per language
        share, piece_rows = pool.piece_share(path, first_group, end_group)
        note = progress.piece_note(self.work_dir, name, path)
        note.update(share=share, piece_rows=piece_rows, rows=0, matched=0)
        try:
            for batch in pool.read_pool_file(path, cfg.url_col, cfg.caption_col, cfg.batch_rows, wat_stats=stats,
                                             row_groups=None if whole else (first_group, end_group)):
                read += batch.num_rows
                _count(self.counters, "rows_read", batch.num_rows)
                matched, dropped = match_rows(batch, self.matcher, cfg.max_caption_chars, self.patterns, languages)
                n_matched += matched.num_rows
                note.update(rows=read, matched=n_matched)
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
        note.done(rows=read, matched=n_matched)
        for name, n in languages.items():
            _count(self.counters, f"language_{name}", n)
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

    def __init__(self, config: CurateConfig, curated_dir: str, dropped_dir: str, partitions: int,
                 ranges: list[tuple[str, int, int]] | None = None):
        self.config, self.curated_dir, self.dropped_dir, self.partitions = config, curated_dir, dropped_dir, partitions
        self.ranges = ranges   # a worldwide list's (language, first id, end id): one t per language
        self._thresholds = None  # (the counts they were made from, each entry's t): once per worker
        self.kept = Metrics.counter("curate", "rows_kept")
        self.balanced_out = Metrics.counter("curate", "dropped_balanced-out")

    def process(self, keyed, counts):
        partition, (refs, copies) = keyed
        rows = read_partition_rows(refs)  # in the same order as KeepFirstCopy's: partition_rows sorts
        distinct = np.ones(rows.num_rows, dtype=bool)
        distinct[copies] = False
        if self._thresholds is None or self._thresholds[0] is not counts:
            # the same pool-wide counts for every partition: sort them per language once, not per partition
            self._thresholds = (counts, balance.thresholds_per_entry(counts, self.config.max_per_entry, self.ranges)[0])
        kept, out = balance_partition(rows, distinct, counts, self._thresholds[1], self.config.seed)
        if out.num_rows:
            self.balanced_out.inc(out.num_rows)
            atomic_write(FileSystems.join(self.dropped_dir, f"balanced-out-{partition:05d}.parquet"),
                             parquet_bytes(out))
        name = f"part-{partition:05d}-of-{self.partitions:05d}.parquet"
        table = curated_table(kept, self.ranges)
        atomic_write(FileSystems.join(self.curated_dir, name), parquet_bytes(table))
        self.kept.inc(kept.num_rows)
        if self.ranges is not None:
            for language, n in zip(*np.unique(table.column("language").to_numpy(zero_copy_only=False),
                                              return_counts=True)):
                Metrics.counter("curate", f"language_kept_{language}").inc(int(n))
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
                 partitions: int, n_entries: int, ranges: list[tuple[str, int, int]] | None = None):
        super().__init__()
        self.write = BalanceAndWriteFn(config, curated_dir, dropped_dir, partitions, ranges)
        self.matched_counts, self.n_entries = matched_counts, n_entries

    def expand(self, parts):
        return (
            parts
            | "BalanceAndWrite" >> beam.ParDo(self.write, AsSingleton(self.matched_counts)).with_output_types(Any)
            | "SumKept" >> beam.CombineGlobally(SumCounts(self.n_entries))
        )
