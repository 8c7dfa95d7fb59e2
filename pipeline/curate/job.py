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
import io
import json
import os
import sys
import uuid
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from clipdata.pipeline.curate import progress, text, work_files
from clipdata.pipeline.curate.steps import BalanceEntries, DedupPairs, MatchPool, parquet_bytes
from clipdata.pipeline.foundation import balance, beam_runner, folder_lock, pool
from clipdata.pipeline.foundation.storage import atomic_write, clear_folder
from clipdata.query_lists import entries as query_entries


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
    # With a worldwide list (a manifest): the language identifier's labels sent to other lists.
    language_map: dict[str, str] | None = None


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
        pool.check_columns(first, config.url_col, config.caption_col)
    except pool.MissingColumnError as err:
        raise CurateError(f"{err}: name the pool's columns with --url-col / --caption-col "
                          "(img2dataset's defaults, url and caption, are ours)") from err


def default_cache_dir() -> str:
    """$CLIPDATA_CACHE, else ~/.cache/clipdata: built matchers and the ftfy shortcut's classes."""
    return os.environ.get("CLIPDATA_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "clipdata")


def prepare_matcher(config: CurateConfig, local: bool) -> tuple[pa.StringArray, str, bool, list | None]:
    """(entries as an Arrow array, matcher file for the workers, whether that file is this run's own,
    to delete, and with a worldwide list each language's (language, first id, end id)).

    The matcher of a 500k-entry list takes seconds to build and milliseconds to load, so it is
    built once here, not in each worker, into `<matcher_cache>/matchers/<hash>.pkl`, the hash
    of the list file's bytes and of how they are read (match.matcher_file_key): a rerun with the
    same list skips the build and the list's checks. Workers on a cluster cannot see this
    machine's disk, so for any runner but the local one the file is copied into the output folder.
    A worldwide list (a manifest: one list per language) becomes one match_worldwide.WorldwideLists,
    hashed over the manifest, every list and the language map.
    """
    from clipdata.pipeline.curate import match
    from clipdata.pipeline.curate.match_worldwide import WorldwideLists

    worldwide = query_entries.is_manifest(config.queries)
    with FileSystems.open(config.queries, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        list_bytes = handle.read()
    if worldwide:
        lists = query_entries.load_manifest(config.queries)
        for language, path in lists.items():
            with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
                list_bytes += f"\x00{language}\x00{path}\x00".encode() + handle.read()
        kind = f"worldwide map={sorted((config.language_map or {}).items())}"
    else:
        kind = f"json={query_entries.is_json_list(config.queries)} " \
               f"compression={CompressionTypes.detect_compression_type(config.queries)}"
    key = match.matcher_file_key(list_bytes, kind, config.lowercase)
    if config.matcher_cache:
        path = os.path.join(config.matcher_cache, "matchers", f"{key}.pkl")
    else:
        path = FileSystems.join(config.output, f"_matcher-{key}.pkl")
    queries = ranges = None
    if config.matcher_cache and os.path.exists(path):
        try:
            with open(path, "rb") as handle:
                cached, queries = match.read_matcher_file(handle)
            ranges = _language_ranges(cached)
            del cached
        except match.StaleMatcherFile as err:
            print(f"curate: rebuilding the cached matcher {path}: {err}", file=sys.stderr)
    if queries is None:
        if worldwide:
            per_language = {language: query_entries.load_entries(list_path) for language, list_path in lists.items()}
            entries = [entry for language in per_language for entry in per_language[language]]
        else:
            entries = query_entries.load_entries(config.queries)
        if not entries:
            raise CurateError(f"the query list {config.queries} has no entries: nothing could match "
                              "(build one with `clipdata queries build`)")
        if worldwide:
            matcher = WorldwideLists(per_language, config.language_map, lowercase=config.lowercase)
        else:
            matcher = match.Matcher(entries, lowercase=config.lowercase)
        ranges = _language_ranges(matcher)
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
    return queries, path, path.startswith(config.output), ranges


def _language_ranges(matcher) -> list[tuple[str, int, int]] | None:
    """(language, first entry id, end entry id) of each list of a worldwide matcher; None for one list."""
    if not hasattr(matcher, "languages"):
        return None
    return [(language, *matcher.language_range(language)) for language in matcher.languages]


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
    queries, matcher_path, temporary, ranges = prepare_matcher(config, beam_runner.uses_local_runner(options))
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
        config, matched_counts, curated_dir, dropped_dir, partitions, n_entries, ranges)
    matched_counts | "SaveMatchedCounts" >> beam.Map(_write_counts, matched_path).with_output_types(Any)
    kept_counts | "SaveKeptCounts" >> beam.Map(_write_counts, kept_path).with_output_types(Any)
    try:
        with progress.CurateWatcher(work_dir, progress.file_sizes(files)):
            result = p.run()
            result.wait_until_finish()
    finally:
        work_files.delete_folder(work_dir)
    counters = beam_runner.counters(result)
    if temporary:
        FileSystems.delete([matcher_path])
    return finish(config, queries, counters, matched_path, kept_path, errors_dir, partitions, ranges)


def finish(config, queries, counters, matched_path, kept_path, errors_dir, partitions, ranges=None) -> dict:
    """Per-entry counts artifact and curate_stats.json, with the row accounting checked."""
    n_entries = len(queries)
    matched = _read_counts(matched_path) if FileSystems.exists(matched_path) else np.zeros(n_entries, np.int64)
    kept = _read_counts(kept_path) if FileSystems.exists(kept_path) else np.zeros(n_entries, np.int64)
    FileSystems.delete([p for p in (matched_path, kept_path) if FileSystems.exists(p)])
    columns = {
        "entry_id": pa.array(np.arange(n_entries), pa.int32()),
        "entry": queries,
        "matched": pa.array(matched, pa.int64()),
        "kept": pa.array(kept, pa.int64()),
    }
    if ranges is not None:
        columns["language"] = pa.array([language for language, start, end in ranges for _ in range(end - start)],
                                       pa.string())
    entry_table = pa.table(columns)
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
    if ranges is not None:
        stats["languages"] = language_stats(counters, matched, kept, ranges, config.max_per_entry)
    with FileSystems.create(FileSystems.join(config.output, "curate_stats.json")) as handle:
        handle.write(json.dumps(stats, indent=2).encode("utf-8"))
    return stats


def language_stats(counters: dict, matched: np.ndarray, kept: np.ndarray, ranges: list[tuple[str, int, int]],
                   t: int) -> dict:
    """Per language of a worldwide list: captions identified as it, captions that matched its list
    (before the pair dedup), pairs kept, its entries matched, and its t (English's t for English,
    the t leaving the same tail share for the others); `other` for captions without a list."""
    thresholds = balance.thresholds_per_entry(matched, t, ranges)[1]
    out = {}
    for language, start, end in ranges:
        out[language] = {
            "captions": counters.get(f"language_captions_{language}", 0),
            "captions_matched": counters.get(f"language_matched_{language}", 0),
            "pairs_kept": counters.get(f"language_kept_{language}", 0),
            "entries": end - start,
            "entries_matched": int((matched[start:end] > 0).sum()),
            "pairs_per_entry_matched": int(matched[start:end].sum()),
            "t": thresholds[language],
        }
    if "other" not in out:
        out["other"] = {"captions": counters.get("language_captions_other", 0), "captions_matched": 0,
                        "pairs_kept": 0}
    return out


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
