"""`clipdata download`: curated pairs (or any url/caption table) -> WebDataset shards, inside Beam.

    input files ─► plan shards (driver) ─► Reshuffle ─► DownloadShard ─► {shard}.tar/.parquet/_stats.json
                                                                    └─► manifest.json, summary (driver)

The shard is the unit of work, of commit and of resume. The driver cuts the input into shard
specs, a function of the input alone (input files sorted, rows in file order, --rows-per-shard
rows each), so shard 7 always holds the same rows. One DoFn call downloads a whole shard with a
pooled HTTP client (pipeline/download/fetch.py), resizes as img2dataset does (resize.py) on a few threads while
the rest downloads (pipeline/download/images.py), and writes it atomically (pipeline/foundation/shards.py: stats last,
the commit marker). A rerun skips committed shards; --retry-failed downloads again only the rows
of a finished run that failed. Output is img2dataset's layout, so OpenCLIP and webdataset read it.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from clipdata.pipeline.download import fetch, images
from clipdata.pipeline.foundation import beam_runner, folder_lock, pool, progress, shards, webdataset_tars

# Columns a curated input carries that the shards keep (parquet and per-sample json).
PASSTHROUGH = {"uid": pa.string(), "source_file": pa.string(), "source_row": pa.int64(), "page_url": pa.string(),
               "language": pa.string()}   # a worldwide list's curated pairs: the caption's list language


class DownloadError(Exception):
    """The inputs or options cannot be downloaded as asked; the message says why."""


@dataclass
class DownloadConfig:
    input: list[str]
    output: str
    url_col: str = "url"
    caption_col: str = "caption"
    rows_per_shard: int = 10_000
    resize_threads: int = 4
    retry_failed: bool = False
    image: images.ImageConfig = field(default_factory=images.ImageConfig)
    fetch: fetch.FetchConfig = field(default_factory=fetch.FetchConfig)


@dataclass(frozen=True)
class ShardSpec:
    shard_id: int
    segments: tuple  # ((input file, first row, end row), ...) in order


# ---------------------------------------------------------------------------------------------
# Planning: input files -> shard specs (plain Python, runs in the driver).


def input_files(patterns: list[str]) -> list[str]:
    """Input tables; a `clipdata curate` output folder means its curated/ parts."""
    files = []
    for pattern in patterns:
        curated = FileSystems.join(pattern, "curated")
        if FileSystems.exists(FileSystems.join(pattern, "curate_stats.json")):
            pattern = curated
        try:
            files.extend(pool.list_pool_files(pattern))
        except (FileNotFoundError, ValueError) as err:
            raise DownloadError(str(err)) from err
    return sorted(set(files))


def count_rows(path: str, config: DownloadConfig) -> int:
    if pool.pool_format(path) == "parquet" and not path.endswith(".gz"):
        with FileSystems.open(path, compression_type="uncompressed") as handle:
            return pq.ParquetFile(handle).metadata.num_rows
    return sum(batch.num_rows for batch in pool.read_pool_file(path, config.url_col, config.caption_col))


def plan_shards(file_rows: list[tuple[str, int]], rows_per_shard: int) -> list[ShardSpec]:
    """Cut the concatenation of the input files into consecutive shards of rows_per_shard rows."""
    specs, segments, filled = [], [], 0
    for path, n_rows in file_rows:
        start = 0
        while start < n_rows:
            take = min(rows_per_shard - filled, n_rows - start)
            segments.append((path, start, start + take))
            filled += take
            start += take
            if filled == rows_per_shard:
                specs.append(ShardSpec(len(specs), tuple(segments)))
                segments, filled = [], 0
    if segments:
        specs.append(ShardSpec(len(specs), tuple(segments)))
    return specs


def read_segment(path: str, start: int, end: int, config: DownloadConfig) -> pa.Table:
    """Rows [start, end) of one input file: url, caption, entry_ids and passthrough columns."""
    if pool.pool_format(path) == "parquet" and not path.endswith(".gz"):
        with FileSystems.open(path, compression_type="uncompressed") as handle:
            parquet = pq.ParquetFile(handle)
            names = parquet.schema_arrow.names
            for column in (config.url_col, config.caption_col):
                if column not in names:
                    raise DownloadError(f"{path}: no column {column!r} (columns: {', '.join(names)}); "
                                        "set --url-col / --caption-col")
            wanted = [config.url_col, config.caption_col] + [c for c in (*PASSTHROUGH, "entry_ids") if c in names]
            groups, first_row, row = [], None, 0
            for g in range(parquet.num_row_groups):
                n = parquet.metadata.row_group(g).num_rows
                if row + n > start and row < end:
                    groups.append(g)
                    first_row = row if first_row is None else first_row
                row += n
            table = parquet.read_row_groups(groups, columns=wanted) if groups else None
        if table is None:
            return pa.table({"url": pa.array([], pa.string()), "caption": pa.array([], pa.string())})
        table = table.slice(start - first_row, end - start)
        return table.rename_columns(["url", "caption", *wanted[2:]])
    batches, row = [], 0
    for batch in pool.read_pool_file(path, config.url_col, config.caption_col):
        lo, hi = max(start - row, 0), min(end - row, batch.num_rows)
        if lo < hi:
            batches.append(batch.slice(lo, hi - lo).select(["url", "caption"]))
        row += batch.num_rows
        if row >= end:
            break
    return pa.Table.from_batches(batches) if batches else pa.table({"url": pa.array([], pa.string()),
                                                                    "caption": pa.array([], pa.string())})


def read_spec(spec: ShardSpec, config: DownloadConfig) -> pa.Table:
    tables = [read_segment(path, start, end, config) for path, start, end in spec.segments]
    return pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]


# ---------------------------------------------------------------------------------------------
# One shard: rows -> ShardRows (plain Python; the DoFn below is a thin layer over it).


def _row_fields(table: pa.Table, i: int, columns: dict) -> tuple[str, str, list, dict]:
    url = columns["url"][i]
    caption = columns["caption"][i]
    entry_ids = columns["entry_ids"][i] if "entry_ids" in columns else []
    extra = {name: columns[name][i] for name in PASSTHROUGH if name in columns}
    return url, caption, entry_ids or [], extra


def download_rows(table: pa.Table, keys: list[str], config: DownloadConfig, resizer,
                  on_row=None) -> list[shards.ShardRow]:
    """Download, check, resize and hash every row of a shard; one ShardRow per input row.
    `on_row(row)` is called as each row is done (progress)."""
    columns = {name: table.column(name).to_pylist() for name in table.column_names}
    n = table.num_rows
    rows: list[shards.ShardRow | None] = [None] * n

    def done(i: int, row: shards.ShardRow) -> None:
        rows[i] = row
        if on_row is not None:
            on_row(row)

    def base(i: int) -> dict:
        url, caption, entry_ids, extra = _row_fields(table, i, columns)
        return dict(key=keys[i], url=url or "", caption=caption, entry_ids=list(entry_ids), extra=extra,
                    image_ext=images.ENCODE_EXTENSIONS[config.image.encode_format])

    def stored(i: int, image: images.StoredImage) -> shards.ShardRow:
        common = dict(base(i), sha256=image.sha256, original_width=image.original_width,
                      original_height=image.original_height)
        if image.error:
            return shards.ShardRow(status="failed", error_message=image.error, error_kind=image.error_kind, **common)
        return shards.ShardRow(status="success", width=image.width, height=image.height, phash=image.phash,
                               phash_centre=image.phash_centre, thumb=image.thumb, image=image.data, **common)

    urls = [u if isinstance(u, str) else "" for u in columns["url"]]
    with concurrent.futures.ThreadPoolExecutor(max(1, config.resize_threads)) as executor:
        pending: dict = {}
        for result in fetch.fetch_many(urls, config.fetch):
            if result.error is not None:
                done(result.index, shards.ShardRow(status="failed", error_message=result.error,
                                                   error_kind=result.error_kind, **base(result.index)))
            else:
                future = executor.submit(images.store_image, result.body, resizer, config.image)
                pending[future] = result.index
            # Bound the bodies waiting for a resize thread: downloads wait instead of memory growing.
            if len(pending) >= 4 * max(1, config.resize_threads):
                finished, _ = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
                for future in finished:
                    i = pending.pop(future)
                    done(i, stored(i, future.result()))
        for future in concurrent.futures.as_completed(list(pending)):
            i = pending.pop(future)
            done(i, stored(i, future.result()))
    return rows  # type: ignore[return-value]


def shard_stats(rows: list[shards.ShardRow], started: float) -> dict:
    errors: dict[str, int] = {}
    failed_to_resize = 0
    for row in rows:
        if row.status != "success":
            kind = row.error_kind or "unknown"   # fetch's kinds, then images' (set where they failed)
            errors[kind] = errors.get(kind, 0) + 1
            failed_to_resize += kind in images.IMAGE_ERROR_KINDS
    return {"start_time": started, "end_time": time.time(), "errors": errors,
            "failed_to_resize": failed_to_resize,
            "failed_to_download": sum(errors.values()) - failed_to_resize}


def retry_rows(output: str, shard_id: int, shard_digits: int, config: DownloadConfig, resizer) -> list[shards.ShardRow]:
    """A committed shard's rows with only its failed rows downloaded again (--retry-failed)."""
    import tarfile

    table = shards.read_shard_table(output, shard_id, shard_digits)
    names = shards.shard_files(shard_id, shard_digits)
    images_by_key = {}
    with FileSystems.open(FileSystems.join(output, names["tar"]), compression_type="uncompressed") as handle:
        with tarfile.open(fileobj=handle, mode="r|") as tar:
            image_exts = tuple(images.ENCODE_EXTENSIONS.values())
            for sample in webdataset_tars.samples(tar, read=image_exts):
                ext = next((e for e in image_exts if e in sample.data), None)
                if ext:
                    images_by_key[sample.key] = sample.data[ext]
    records = table.to_pylist()
    failed = [r for r in records if r["status"] != "success"]
    retried = {}
    if failed:
        failed_table = pa.table({"url": [r["url"] for r in failed], "caption": [r["caption"] for r in failed],
                                 "entry_ids": [r["entry_ids"] for r in failed],
                                 **{c: [r.get(c) for r in failed] for c in PASSTHROUGH if c in table.column_names}})
        for row in download_rows(failed_table, [r["key"] for r in failed], config, resizer):
            retried[row.key] = row
    rows = []
    for record in records:
        if record["key"] in retried:
            rows.append(retried[record["key"]])
            continue
        extra = {c: record[c] for c in PASSTHROUGH if c in record}
        base = {k: record[k] for k in ("key", "url", "caption", "status", "error_message", "width", "height",
                                       "original_width", "original_height", "sha256", "phash")}
        base["phash_centre"] = record.get("phash_centre")  # absent from shards written before it
        base["thumb"] = record.get("thumb")
        rows.append(shards.ShardRow(**base, entry_ids=record["entry_ids"] or [], extra=extra,
                                    image=images_by_key.get(record["key"]),
                                    image_ext=images.ENCODE_EXTENSIONS[config.image.encode_format]))
    return rows


# ---------------------------------------------------------------------------------------------
# Beam.


class DownloadShardFn(beam.DoFn):
    """ShardSpec -> a committed shard in the output folder; yields its stats."""

    def __init__(self, config: DownloadConfig, shard_digits: int, row_digits: int):
        self.config, self.shard_digits, self.row_digits = config, shard_digits, row_digits
        self.counters: dict = {}
        self.shards_done = Metrics.counter("download", "shards_written")

    def setup(self):
        self.resizer = images.make_resizer(self.config.image)

    def _count(self, name: str, n: int = 1) -> None:
        if name not in self.counters:
            self.counters[name] = Metrics.counter("download", name)
        self.counters[name].inc(n)

    def process(self, spec: ShardSpec):
        started = time.time()
        note = None
        if self.config.retry_failed:
            rows = retry_rows(self.config.output, spec.shard_id, self.shard_digits, self.config, self.resizer)
        else:
            table = read_spec(spec, self.config)
            keys = [shards.sample_key(spec.shard_id, i, self.shard_digits, self.row_digits)
                    for i in range(table.num_rows)]
            note = RowsDone(self.config.output, spec.shard_id)
            rows = download_rows(table, keys, self.config, self.resizer, on_row=note.add)
        stats = shard_stats(rows, started)
        written = shards.write_shard(self.config.output, spec.shard_id, rows, stats, self.shard_digits,
                                     extra_types={k: v for k, v in PASSTHROUGH.items()
                                                  if rows and k in rows[0].extra})
        if note is not None:
            note.close()
        self.shards_done.inc()
        self._count("rows", len(rows))
        self._count("success", written["successes"])
        for kind, n in written.get("errors", {}).items():
            self._count(f"failed_{kind}", n)
        yield written


class DownloadShards(beam.PTransform):
    def __init__(self, config: DownloadConfig, shard_digits: int, row_digits: int):
        super().__init__()
        self.config, self.shard_digits, self.row_digits = config, shard_digits, row_digits

    def expand(self, specs):
        return (
            specs
            | "SpreadShards" >> beam.Reshuffle()
            | "DownloadShard" >> beam.ParDo(DownloadShardFn(self.config, self.shard_digits, self.row_digits))
        )


PROGRESS_DIR = "_progress"   # the workers' notes on shards in flight; removed when the job ends
NOTE_EVERY = 2.0             # seconds between a worker's notes on one shard


class RowsDone:
    """A worker's count of one shard's rows done so far, noted in PROGRESS_DIR every NOTE_EVERY s
    (best-effort: a progress line is not worth failing a shard for), so the driver can show
    images as they come, not when a 10,000-row shard commits."""

    def __init__(self, output: str, shard_id: int):
        self.note = progress.Note(FileSystems.join(output, PROGRESS_DIR, f"{shard_id}.json"), every=NOTE_EVERY)
        self.rows = self.successes = 0

    def add(self, row: shards.ShardRow) -> None:
        self.rows += 1
        self.successes += row.status == "success"
        self.note.update(rows=self.rows, successes=self.successes)

    def close(self) -> None:
        """The shard is committed: its note goes (the driver reads only the shards in flight, so a
        tick costs reads for the workers' shards, not for every shard done)."""
        self.note.remove()


class Progress(progress.Watcher):
    """Shards done / total, images, images/s and success rate: from the committed stats files and
    the workers' notes on the shards in flight (RowsDone). It watches the output folder rather
    than the workers, so it works the same on the local runner and on a cluster writing to gs://;
    a line redrawn on a terminal, a plain line every 30 s in a log, a last one at the end.
    """

    def __init__(self, output: str, total: int, already: set[int], shard_digits: int, stream=None):
        # sys.stderr as it is now, not as it was when this module was imported (a test's captured
        # stream, closed since, or one a host program has replaced).
        super().__init__(stream if stream is not None else sys.stderr)
        self.output, self.total, self.already, self.shard_digits = output, total, set(already), shard_digits
        self.notes = FileSystems.join(output, PROGRESS_DIR)
        self.counted: dict[int, tuple[int, int]] = {}   # committed shard -> (rows, successes)

    def _in_flight(self, committed: set[int]) -> tuple[int, int]:
        rows = successes = 0
        for name, note in progress.read_notes(FileSystems.join(self.notes, "*.json")):
            if name[:-5].isdigit() and int(name[:-5]) not in committed:
                rows, successes = rows + note.get("rows", 0), successes + note.get("successes", 0)
        return rows, successes

    def text(self) -> str:
        committed = shards.committed_shards(self.output)
        done = committed - self.already
        for shard_id in done - self.counted.keys():   # each stats file read once, not every tick
            try:
                stats = shards.read_shard_stats(self.output, shard_id, self.shard_digits)
            except Exception:  # noqa: BLE001 - a stats file being replaced right now
                continue
            self.counted[shard_id] = (stats.get("count", 0), stats.get("successes", 0))
        rows = sum(self.counted[s][0] for s in done if s in self.counted)
        successes = sum(self.counted[s][1] for s in done if s in self.counted)
        flight_rows, flight_successes = self._in_flight(committed)
        rows, successes = rows + flight_rows, successes + flight_successes
        elapsed = max(time.time() - self.started, 1e-9)
        rate = 100 * successes / rows if rows else 0.0
        return (f"download: {len(done)}/{self.total} shards, {successes:,} images, "
                f"{successes / elapsed:,.0f} images/s, {rate:.1f}% success; "
                f"ETA {progress.eta(len(done), self.total, elapsed)}")

    def __enter__(self):
        try:
            FileSystems.mkdirs(self.notes)
        except Exception:  # noqa: BLE001 - there already
            pass
        return super().__enter__()

    def __exit__(self, *exc):
        super().__exit__(*exc)
        try:
            FileSystems.delete([self.notes])
        except Exception:  # noqa: BLE001 - nothing written
            pass


def shard_layout(n_shards: int, rows_per_shard: int) -> tuple[int, int]:
    return shards.shard_digits_for(n_shards), shards.row_digits_for(rows_per_shard)


def run_download(config: DownloadConfig, beam_args: list[str] | None = None) -> dict:
    """Plan, skip committed shards, download the rest, write the manifest; returns a summary."""
    if config.rows_per_shard < 1:
        raise DownloadError("--rows-per-shard must be at least 1")
    try:
        config.image.check()
    except images.ImageConfigError as err:
        raise DownloadError(str(err)) from err
    with folder_lock.writer_lock(config.output, "download"):   # one writer per folder
        return _run_download(config, beam_args)


def _run_download(config: DownloadConfig, beam_args: list[str] | None) -> dict:
    if not FileSystems.exists(config.output):
        FileSystems.mkdirs(config.output)
    plan_path = FileSystems.join(config.output, "_plan.json")
    if config.retry_failed:
        specs, shard_digits, row_digits = _load_plan(plan_path)
        todo = [s for s in specs if _has_failures(config.output, s.shard_id, shard_digits)]
    else:
        files = input_files(config.input)
        if not files:
            raise DownloadError(f"no input files in {config.input}")
        try:   # before the job: a wrong name would fail every shard, each with Beam's traceback
            pool.check_columns(files[0], config.url_col, config.caption_col)
        except pool.MissingColumnError as err:
            raise DownloadError(f"{err}: name the input's columns with --url-col / --caption-col") from err
        specs = plan_shards([(f, count_rows(f, config)) for f in files], config.rows_per_shard)
        shard_digits, row_digits = shard_layout(len(specs), config.rows_per_shard)
        _save_plan(plan_path, specs, shard_digits, row_digits, config)
        shards.remove_partial(config.output)
        done = shards.committed_shards(config.output)
        todo = [s for s in specs if s.shard_id not in done]

    started = time.time()
    if todo:
        p = beam_runner.make_pipeline(beam_args)
        _ = (p | "ShardSpecs" >> beam.Create(todo)
             | "DownloadShards" >> DownloadShards(config, shard_digits, row_digits))
        already = shards.committed_shards(config.output) - {s.shard_id for s in todo}
        with Progress(config.output, len(specs), already if not config.retry_failed else set(), shard_digits):
            result = p.run()
            result.wait_until_finish()
    manifest = shards.write_manifest(config.output)
    return summarize(config.output, specs, shard_digits, len(todo), time.time() - started, manifest)


def _save_plan(path: str, specs, shard_digits: int, row_digits: int, config: DownloadConfig) -> None:
    plan = {"shard_digits": shard_digits, "row_digits": row_digits, "rows_per_shard": config.rows_per_shard,
            "image": dataclasses.asdict(config.image),
            "shards": [{"shard_id": s.shard_id, "segments": [list(seg) for seg in s.segments]} for s in specs]}
    if FileSystems.exists(path):
        with FileSystems.open(path) as handle:
            old = json.loads(handle.read())
        if old["shards"] != plan["shards"] or old["row_digits"] != row_digits:
            raise DownloadError(
                f"{path}: this output folder holds shards of another input or --rows-per-shard; "
                "use a new --output folder (or delete this one) to download a different input")
    with FileSystems.create(path) as handle:
        handle.write(json.dumps(plan, indent=1).encode("utf-8"))


def _load_plan(path: str):
    if not FileSystems.exists(path):
        raise DownloadError(f"--retry-failed needs a finished run in this output folder ({path} not found)")
    with FileSystems.open(path) as handle:
        plan = json.loads(handle.read())
    specs = [ShardSpec(s["shard_id"], tuple(tuple(seg) for seg in s["segments"])) for s in plan["shards"]]
    return specs, plan["shard_digits"], plan["row_digits"]


def _has_failures(output: str, shard_id: int, shard_digits: int) -> bool:
    if shard_id not in shards.committed_shards(output):
        raise DownloadError(f"shard {shard_id} was never committed: run the download again "
                            "(without --retry-failed) to finish it first")
    stats = shards.read_shard_stats(output, shard_id, shard_digits)
    return stats.get("successes", 0) < stats.get("count", 0)


def summarize(output: str, specs, shard_digits: int, downloaded: int, seconds: float, manifest: dict) -> dict:
    status: dict[str, int] = {}
    errors: dict[str, int] = {}
    rows = 0
    for spec in specs:
        stats = shards.read_shard_stats(output, spec.shard_id, shard_digits)
        rows += stats.get("count", 0)
        status["success"] = status.get("success", 0) + stats.get("successes", 0)
        for kind, n in stats.get("errors", {}).items():
            errors[kind] = errors.get(kind, 0) + n
    status["failed"] = sum(errors.values())
    return {"output": output, "shards": len(specs), "shards_downloaded_now": downloaded, "rows": rows,
            "status": status, "errors": dict(sorted(errors.items(), key=lambda kv: -kv[1])),
            "seconds": round(seconds, 2), "train_data": manifest["openclip"]["train_data"],
            "train_num_samples": manifest["openclip"]["train_num_samples"]}
