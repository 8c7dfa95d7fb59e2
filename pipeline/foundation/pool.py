"""Read a pool: the (image URL, caption) pairs `clipdata curate` starts from.

A pool is one or more files on any file system Beam knows (local, gs://, s3://, hdfs://):
parquet, csv, tsv or JSON lines (`.jsonl`, `.json`), each optionally gzipped, with the URL and the
caption in two named columns (img2dataset's defaults: `url`, `caption`); or Common Crawl WAT files
(`.wat`, `.wat.gz`, read by wat.py), where each row is an `<img src alt>` of a crawled page.

Rows travel as pyarrow RecordBatches of POOL_SCHEMA, never as one Python object per row:

    url          string   as written in the file (WAT: resolved against the page)
    caption      string   as written in the file (WAT: the alt text); cleaned later by text.py
    source_file  string   the path the row was read from
    source_row   int64    0-based row number in that file (WAT: the index of the <img> link among
                          all `IMG@/src` links of the file, in file order), so a row can be found
    page_url     string   the page an image is on (WAT only; null for table formats)

Row accounting is exact: every row of a readable file is in exactly one batch. A file that cannot
be parsed (corrupt parquet, a CSV row with the wrong number of fields, a line that is not JSON, a
gzip stream cut short) raises PoolReadError naming the file and the row; the Beam layer records it
as an unreadable-file drop. A pool whose files lack the asked-for column raises MissingColumnError,
a configuration mistake that should stop the job rather than drop every file. Errors of the file
system itself (a network read failing) propagate unchanged so Beam retries.
"""
from __future__ import annotations

import io
import json
import re
import zlib
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.json as pjson
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from clipdata.pipeline.foundation import failures

POOL_SCHEMA = pa.schema([
    pa.field("url", pa.string()),
    pa.field("caption", pa.string()),
    pa.field("source_file", pa.string()),
    pa.field("source_row", pa.int64()),
    pa.field("page_url", pa.string()),
])
# A dropped row keeps all its columns and says why (text.py, wat.py, the Beam layer).
DROP_SCHEMA = POOL_SCHEMA.append(pa.field("reason", pa.string()))

# Extension (after an optional .gz) -> format. `.json` is read as JSON lines, as img2dataset does.
FORMATS = {
    ".parquet": "parquet",
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".wat": "wat",
}
DEFAULT_BATCH_ROWS = 65536
# pyarrow's csv/json readers parse a block at a time; a JSON line must fit in one block.
_BLOCK_BYTES = 8 << 20
_READ_CHUNK = 1 << 20


class PoolReadError(Exception):
    """A pool file that cannot be parsed. `row` is the 0-based row where it failed when known;
    `rows_read` how many rows of the file were already yielded in batches before the failure."""

    def __init__(self, path: str, problem: str, row: int | None = None):
        self.path, self.problem, self.row, self.rows_read = path, problem, row, 0
        super().__init__()

    def __str__(self):
        where = f" at row {self.row} (0-based)" if self.row is not None else ""
        before = f"; the {self.rows_read} rows before it were read" if self.rows_read else ""
        return f"cannot read pool file {self.path}{where}: {self.problem}{before}"


class MissingColumnError(ValueError):
    """The URL or caption column asked for is not in a pool file."""

    def __init__(self, path: str, role: str, column: str, present: list[str]):
        # the command adds how to name the columns (its flags): said once, by the caller
        super().__init__(f"{path} has no {role} column {column!r}; its columns are {', '.join(present)}")
        self.path, self.role, self.column, self.present = path, role, column, present


def check_columns(path: str, url_col: str, caption_col: str) -> None:
    """Before a job: the file has the URL and caption columns asked for (MissingColumnError if
    not; a wrong name would fail every file). A file that cannot be read passes: the job counts
    and names it, file by file."""
    try:
        next(iter(read_pool_file(path, url_col, caption_col, batch_rows=16)), None)
    except PoolReadError:
        pass


def pool_format(path: str) -> str:
    """'parquet', 'csv', 'tsv', 'jsonl' or 'wat', from the file name (an optional .gz aside)."""
    name = path.rsplit("/", 1)[-1].lower()
    if name.endswith(".gz"):
        name = name[:-3]
    for ext, fmt in FORMATS.items():
        if name.endswith(ext):
            return fmt
    raise ValueError(f"{path}: not a pool file; pool files end in "
                     f"{', '.join(FORMATS)} (each optionally .gz)")


def _is_pool_file(path: str) -> bool:
    try:
        pool_format(path)
    except ValueError:
        return False
    return True


def list_pool_files(pattern: str) -> list[str]:
    """The files of a pool, sorted: `pattern` is one file, a glob (`*` within a folder, `**`
    across folders), or a folder, meaning every pool file anywhere under it. In a folder, names
    starting with `.` or `_` are skipped (Spark's `_SUCCESS`, `.crc` files, parquet `_metadata`);
    a glob must match pool files only."""
    if not re.search(r"[*?\[]", pattern):
        # A folder (or an object-store prefix ending in /) holds files under `pattern/`.
        under = _match(pattern.rstrip("/") + "/**")
        if under:
            files = [p for p in under if _is_pool_file(p) and not _hidden(p, pattern)]
            if not files:
                raise FileNotFoundError(
                    f"folder {pattern} holds no pool files ({', '.join(FORMATS)}, optionally .gz); "
                    f"it holds e.g. {under[:3]}")
            return sorted(set(files))
    files = _match(pattern)
    if not files:
        raise FileNotFoundError(f"nothing matches {pattern!r}: no such file, folder or glob match")
    others = [p for p in files if not _is_pool_file(p)]
    if others:
        raise ValueError(f"{pattern!r} matches {len(others)} files that are not pool files, e.g. "
                         f"{others[:3]}; pool files end in {', '.join(FORMATS)} "
                         f"(each optionally .gz)")
    return sorted(set(files))


def _match(pattern: str) -> list[str]:
    return [m.path for result in FileSystems.match([pattern]) for m in result.metadata_list]


def _hidden(path: str, folder: str) -> bool:
    relative = path[len(folder.rstrip("/")):].lstrip("/")
    return any(part.startswith((".", "_")) for part in relative.split("/"))


def pool_pieces(path: str, rows_per_piece: int = DEFAULT_BATCH_ROWS) -> list[tuple[str, int, int]]:
    """A pool file cut into pieces that can be read apart: (path, first row group, end row group)
    runs of a plain parquet file's row groups, each of at least `rows_per_piece` rows but the
    last; (path, 0, -1), the whole file, for any other file or when the footer cannot be read
    (reading it then reports the error)."""
    if pool_format(path) != "parquet" or path.lower().endswith(".gz"):
        return [(path, 0, -1)]
    try:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            metadata = pq.ParquetFile(handle).metadata
    except (pa.ArrowException, OSError, ValueError):
        return [(path, 0, -1)]
    pieces, first, rows = [], 0, 0
    for group in range(metadata.num_row_groups):
        rows += metadata.row_group(group).num_rows
        if rows >= rows_per_piece or group == metadata.num_row_groups - 1:
            pieces.append((path, first, group + 1))
            first, rows = group + 1, 0
    return pieces or [(path, 0, -1)]


def piece_share(path: str, first_group: int, end_group: int) -> tuple[float, int | None]:
    """(the share of its file's bytes a piece from pool_pieces holds, its rows): row groups
    [first, end) of a parquet file by their compressed size; (1.0, None) for a whole file (end < 0)
    or when the footer cannot be read. For progress: the shares of a file's pieces sum to 1."""
    if end_group < 0:
        return 1.0, None
    try:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            metadata = pq.ParquetFile(handle).metadata
    except (pa.ArrowException, OSError, ValueError):
        return 1.0, None
    sizes = [sum(metadata.row_group(g).column(c).total_compressed_size for c in range(metadata.num_columns))
             for g in range(metadata.num_row_groups)]
    rows = sum(metadata.row_group(g).num_rows for g in range(first_group, end_group))
    return sum(sizes[first_group:end_group]) / (sum(sizes) or 1), rows


def read_pool_file(path: str, url_col: str = "url", caption_col: str = "caption",
                   batch_rows: int = DEFAULT_BATCH_ROWS,
                   wat_stats=None, row_groups: tuple[int, int] | None = None) -> Iterator[pa.RecordBatch]:
    """The rows of one pool file as RecordBatches of POOL_SCHEMA, at most `batch_rows` rows each.

    row_groups=(first, end) reads only those row groups of a parquet file (a piece from
    pool_pieces), numbering rows from the file's start.
    url_col / caption_col name the columns of table formats (ignored for WAT). For WAT files, pass
    a wat.WatStats as `wat_stats` to get the counts of links and records passed over.
    Raises PoolReadError for a file that cannot be parsed, MissingColumnError for a missing column.
    """
    fmt = pool_format(path)
    if fmt == "wat":
        from clipdata.pipeline.foundation.wat import read_wat  # wat.py imports this module

        yield from read_wat(path, batch_rows=batch_rows, stats=wat_stats)
        return
    read_columns = {"parquet": _parquet_columns, "csv": _csv_columns, "tsv": _csv_columns,
                    "jsonl": _jsonl_columns}[fmt]
    if row_groups is not None and fmt != "parquet":
        raise ValueError(f"{path}: only parquet files are read by row groups")
    stream = SourceStream(path, gunzip=path.lower().endswith(".gz"))
    source_row = first_row = 0
    try:
        # A stream of (url, caption) array pairs, in file order, as the format's reader cuts them.
        if row_groups is not None:
            columns = _parquet_columns(stream, fmt, url_col, caption_col, batch_rows, row_groups)
            source_row = first_row = next(columns)
        else:
            columns = read_columns(stream, fmt, url_col, caption_col, batch_rows)
        for urls, captions in columns:
            urls = _as_string(urls, url_col, path)
            captions = _as_string(captions, caption_col, path)
            for start in range(0, len(urls), batch_rows):
                n = min(batch_rows, len(urls) - start)
                batch = pool_batch(urls.slice(start, n), captions.slice(start, n), path,
                                   np.arange(source_row, source_row + n, dtype=np.int64))
                yield batch
                source_row += batch.num_rows
    except PoolReadError as err:
        err.rows_read = source_row - first_row
        raise
    except (pa.ArrowException, OSError, ValueError, EOFError, zlib.error) as err:
        if err is stream.io_error or isinstance(err, MissingColumnError):
            raise
        error = PoolReadError(path, _describe(err))
        error.rows_read = source_row - first_row
        raise error from err
    finally:
        stream.close()


def _describe(err: Exception) -> str:
    if isinstance(err, zlib.error):
        return f"corrupt gzip data ({err})"
    if isinstance(err, EOFError):
        return str(err)
    return failures.describe(err)


def pool_batch(urls, captions, path: str, source_rows, page_urls=None) -> pa.RecordBatch:
    """A POOL_SCHEMA batch from its columns (arrays or sequences); page_url null when not given."""
    n = len(urls)
    return pa.RecordBatch.from_arrays([
        pa.array(urls, pa.string()),
        pa.array(captions, pa.string()),
        pa.repeat(pa.scalar(path, pa.string()), n),
        pa.array(source_rows, pa.int64()),
        pa.nulls(n, pa.string()) if page_urls is None else pa.array(page_urls, pa.string()),
    ], schema=POOL_SCHEMA)


def _as_string(column: pa.Array, name: str, path: str) -> pa.Array:
    if column.type == pa.string():
        return column
    try:
        return pc.cast(column, pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        raise PoolReadError(path, f"column {name!r} holds {column.type}, not text ({err})"
                            ) from None


def _check_columns(path: str, present: list[str], url_col: str, caption_col: str):
    for role, column in (("URL", url_col), ("caption", caption_col)):
        if column not in present:
            raise MissingColumnError(path, role, column, present)


def _wanted(url_col: str, caption_col: str) -> list[str]:
    return [url_col] if url_col == caption_col else [url_col, caption_col]


# Each format reader yields (url array, caption array) pairs, in file order.

def _parquet_columns(stream, fmt, url_col, caption_col, batch_rows, row_groups=None):
    # With row_groups, the first item is the file's row number of the first row read.
    # Parquet needs random access: a gzipped parquet (rare) is decompressed into memory.
    source = stream if not stream.gunzip else pa.BufferReader(stream.read())
    try:
        # pre_buffer: read each row group's column chunks in few large requests (object stores).
        parquet = pq.ParquetFile(source, pre_buffer=True)
    except (pa.ArrowException, OSError) as err:
        if err is stream.io_error:
            raise
        raise PoolReadError(stream.path, f"not a readable parquet file: {err}") from err
    _check_columns(stream.path, parquet.schema_arrow.names, url_col, caption_col)
    first_row = 0
    groups = None
    if row_groups is not None:
        groups = range(*row_groups)
        first_row = sum(parquet.metadata.row_group(g).num_rows for g in range(row_groups[0]))
        yield first_row
    try:
        columns = _wanted(url_col, caption_col)
        for batch in parquet.iter_batches(batch_size=batch_rows, columns=columns, row_groups=groups):
            yield batch.column(url_col), batch.column(caption_col)
            first_row += batch.num_rows
    except (pa.ArrowException, OSError) as err:
        if err is stream.io_error:
            raise
        raise PoolReadError(stream.path, f"corrupt parquet data in the row batch starting here: "
                                         f"{err}", row=first_row) from err


def _csv_columns(stream, fmt, url_col, caption_col, batch_rows):
    if not stream.peek(1):
        return  # an empty file has no rows (and no header to check)
    bad_rows = []

    def on_invalid_row(row):
        bad_rows.append(row)
        return "error"

    wanted = _wanted(url_col, caption_col)
    options = dict(
        # Threads off: pyarrow numbers the failing row only when it parses on one thread; Beam
        # already reads many files at once.
        read_options=pcsv.ReadOptions(block_size=_BLOCK_BYTES, use_threads=False),
        # Captions may hold quoted newlines.
        parse_options=pcsv.ParseOptions(delimiter="\t" if fmt == "tsv" else ",",
                                        newlines_in_values=True,
                                        invalid_row_handler=on_invalid_row),
        # Everything as text; "", "NA", "null" stay the strings they are.
        convert_options=pcsv.ConvertOptions(include_columns=wanted,
                                            column_types={c: pa.string() for c in wanted},
                                            strings_can_be_null=False),
    )
    try:
        reader = pcsv.open_csv(stream, **options)
        for batch in reader:
            yield batch.column(url_col), batch.column(caption_col)
    except pa.ArrowKeyError as err:  # include_columns names a column the header lacks
        if "include_columns" not in str(err):
            raise
        _check_columns(stream.path, _csv_header(stream, fmt), url_col, caption_col)
        raise
    except pa.ArrowInvalid as err:
        if not bad_rows:
            raise PoolReadError(stream.path, f"malformed {fmt.upper()}: {err}") from err
        row = bad_rows[0]
        # pyarrow numbers rows from 1 with the header as row 1.
        where = row.number - 2 if row.number is not None else None
        raise PoolReadError(stream.path, f"malformed {fmt.upper()}: expected "
                                         f"{row.expected_columns} fields, found "
                                         f"{row.actual_columns} in {row.text[:200]!r}",
                            row=where) from err


def _csv_header(stream: SourceStream, fmt: str) -> list[str]:
    with SourceStream(stream.path, stream.gunzip) as again:
        return pcsv.open_csv(again, parse_options=pcsv.ParseOptions(
            delimiter="\t" if fmt == "tsv" else ",", newlines_in_values=True)).schema.names


def _jsonl_columns(stream, fmt, url_col, caption_col, batch_rows):
    # JSON lines have no header: the first object's keys stand for the file's columns.
    first = stream.peek_line()
    while first is not None and not first.strip():
        stream.read(len(first))  # leading blank lines
        first = stream.peek_line()
    if first is None:
        return
    try:
        keys = json.loads(first)
    except ValueError as err:
        raise PoolReadError(stream.path, f"line 1 is not JSON ({err}); JSON pool files hold one "
                                         f"object per line", row=0) from err
    if not isinstance(keys, dict):
        raise PoolReadError(stream.path, f"line 1 is a JSON {type(keys).__name__}, not an object; "
                                         f"JSON pool files hold one object per line", row=0)
    _check_columns(stream.path, list(keys), url_col, caption_col)
    schema = pa.schema([(c, pa.string()) for c in _wanted(url_col, caption_col)])
    rows = 0
    try:
        reader = pjson.open_json(
            stream, read_options=pjson.ReadOptions(block_size=_BLOCK_BYTES, use_threads=False),
            parse_options=pjson.ParseOptions(explicit_schema=schema,
                                             unexpected_field_behavior="ignore"))
        for batch in reader:
            yield batch.column(url_col), batch.column(caption_col)
            rows += batch.num_rows
    except pa.ArrowInvalid as err:
        # pyarrow counts rows from the start of the failing block, which follows the rows read.
        found = re.search(r" in row (\d+)$", str(err))
        raise PoolReadError(stream.path, f"bad JSON line: {err} (a caption or URL must be a string "
                                         f"or null; each line one object)",
                            row=rows + int(found.group(1)) if found else None) from err


class SourceStream(io.RawIOBase):
    """A Beam file as a plain binary stream for pyarrow and warcio, gunzipped here when asked.

    Beam's own gzip reader is not used: its `closed` is a method, which pyarrow takes for "closed",
    and it returns a gzip cut short as if it were whole. Here a cut gzip raises EOFError, and an
    exception raised by the file system is kept in `io_error`, so readers can let it through
    (Beam retries) instead of calling the file malformed. `at_eof` says the file's end was reached.
    """

    def __init__(self, path: str, gunzip: bool = False):
        super().__init__()
        self.path, self.gunzip = path, gunzip
        self.io_error: BaseException | None = None
        self.at_eof = False
        self._file = self._call(FileSystems.open, path,
                                compression_type=CompressionTypes.UNCOMPRESSED)
        self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS) if gunzip else None
        self._member_bytes = 0  # compressed bytes fed to the current gzip member
        self._buffer = bytearray()  # read ahead (decompressed, or peeked), not yet returned
        self._returned = 0  # bytes returned so far: the position in a gunzipped stream

    def _call(self, method, *args, **kwargs):
        try:
            return method(*args, **kwargs)
        except Exception as err:
            self.io_error = err
            raise

    def readable(self):
        return True

    def seekable(self):
        return not self.gunzip

    def seek(self, offset, whence=io.SEEK_SET):
        self._buffer.clear()
        self.at_eof = False
        return self._call(self._file.seek, offset, whence)

    def tell(self):
        if self.gunzip:
            return self._returned
        return self._call(self._file.tell) - len(self._buffer)

    def readinto(self, buffer):
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def read(self, size=-1):
        if size is None or size < 0:
            while not self.at_eof:
                self._fill(_READ_CHUNK)
            data = bytes(self._buffer)
            self._buffer.clear()
        elif not self._buffer and not self.gunzip:
            data = self._call(self._file.read, size)
            self.at_eof = self.at_eof or not data
        else:
            while len(self._buffer) < size and not self.at_eof:
                self._fill(_READ_CHUNK)
            with memoryview(self._buffer) as view:
                data = bytes(view[:size])
            del self._buffer[:size]  # cheap: bytearray drops from the front without copying
        self._returned += len(data)
        return data

    def peek(self, size: int) -> bytes:
        """Up to `size` bytes from here on, left to be read again."""
        while len(self._buffer) < size and not self.at_eof:
            self._fill(_READ_CHUNK)
        return bytes(self._buffer[:size])

    def peek_line(self) -> bytes | None:
        """The next line, with its newline, left to be read again; None at the end of the file."""
        while b"\n" not in self._buffer and not self.at_eof:
            self._fill(_READ_CHUNK)
        if not self._buffer:
            return None
        end = self._buffer.find(b"\n")
        return bytes(self._buffer if end < 0 else self._buffer[:end + 1])

    def _fill(self, size: int):
        raw = self._call(self._file.read, size)
        if not raw:
            self.at_eof = True
            if self._inflate is not None and self._member_bytes and not self._inflate.eof:
                raise EOFError("the file ends inside a gzip stream (a download or copy cut short?)")
            return
        if self._inflate is None:
            self._buffer += raw
            return
        while raw:
            if self._inflate.eof:  # one gzip member ended; a concatenated one may follow
                if not raw.strip(b"\0"):
                    return  # zero padding after the last member, as gzip(1) allows
                self._inflate, self._member_bytes = zlib.decompressobj(16 + zlib.MAX_WBITS), 0
            self._member_bytes += len(raw)
            self._buffer += self._inflate.decompress(raw)
            raw = self._inflate.unused_data if self._inflate.eof else b""

    def close(self):
        if not self.closed and getattr(self, "_file", None) is not None:
            self._file.close()
        super().close()
