"""Write one downloaded shard in img2dataset's layout, atomically; list, clean and index shards.

A shard is the unit of work, commit and resume of `clipdata download`. For shard 12 the output
folder gets, exactly as img2dataset writes them (so OpenCLIP and webdataset read them as they are):

    00012.tar           per successful row, adjacent and in key order: {key}.jpg|png|webp (image),
                        {key}.txt (caption, UTF-8), {key}.json (the row's metadata)
    00012.parquet       EVERY input row, success or not, in key order, with status and error_message
    00012_stats.json    counts (img2dataset's fields) + errors by kind; written last = commit marker

Keys are img2dataset's: the shard id zero-padded to `shard_digits` (at least 5) followed by the row
zero-padded to `row_digits` (4 for 10,000 rows per shard), 9 digits in all.

Commit protocol: each file is written under a temporary name in the output folder
(`.00012.tar.tmp-<random>`), flushed and fsynced, then renamed into place in the order tar,
parquet, stats. A shard is committed iff its `_stats.json` exists; a run killed at any point leaves
either a committed shard or files that `remove_partial` deletes. Rewriting a committed shard first
removes its old stats, so a kill mid-rewrite never pairs old stats with new files. Headers, parquet
options and member order are fixed, so writing the same rows twice gives byte-identical tar and
parquet files.

Paths: a local folder uses os (fsync, atomic os.replace, directory fsync); a path with a scheme
(`gs://`, `s3://`, `hdfs://`, ...) goes through Beam's FileSystems, where a rename is the file
system's own (on object stores a copy then delete: no fsync, and not atomic, but stats are still
renamed last, so the commit marker still appears only after the data files are complete).

    rows = [ShardRow(key=sample_key(12, i), url=..., caption=..., status="success", image=b"...")]
    write_shard("shards/", 12, rows, {"start_time": t0})
    committed_shards("shards/")   # {12}
    write_manifest("shards/")     # manifest.json: shard list, totals, OpenCLIP's --train-data
"""
from __future__ import annotations

import collections
import datetime
import io
import json
import math
import os
import re
import tarfile
import time
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from clipdata.pipeline.foundation.storage import TEMP_NAME, atomic_write, storage_for, write_temp

IMAGE_EXTS = ("jpg", "png", "webp")
STATUSES = ("success", "failed")
MIN_SHARD_DIGITS = 5
MANIFEST = "manifest.json"

# The parquet's own columns, in order; passthrough columns from the input table follow them.
PARQUET_FIELDS = [
    pa.field("key", pa.string()),
    pa.field("url", pa.string()),
    pa.field("caption", pa.string()),
    pa.field("status", pa.string()),
    pa.field("error_message", pa.string()),
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("original_width", pa.int32()),
    pa.field("original_height", pa.int32()),
    pa.field("sha256", pa.string()),
    pa.field("phash", pa.string()),
    pa.field("phash_centre", pa.string()),
    pa.field("thumb", pa.binary()),
    pa.field("entry_ids", pa.list_(pa.int32())),
]
BASE_COLUMNS = tuple(f.name for f in PARQUET_FIELDS)
BINARY_COLUMNS = ("thumb",)  # in the parquet only, not in the sample's json

# Fixed writer options: nothing that varies between runs ends up in the file (pyarrow writes no
# timestamps; `created_by` names the pyarrow version, constant for an installation).
PARQUET_OPTIONS = dict(
    compression="zstd",
    compression_level=3,
    use_dictionary=True,
    write_statistics=True,
    version="2.6",
    data_page_version="1.0",
    store_schema=True,
)

# Every tar header gets these, so a rerun writes the same bytes.
TAR_MTIME = 0
TAR_MODE = 0o644

_STATS = re.compile(r"^(\d+)_stats\.json$")
_DATA = re.compile(r"^(\d+)\.(tar|parquet)$")
_DIGITS = re.compile(r"^[0-9]+$")
_PHASH = re.compile(r"^[0-9a-f]{16}$")


@dataclass
class ShardRow:
    """One input row of a shard, downloaded or not: what the parquet (and, on success, the tar) holds.

    `image` (the encoded bytes) goes into the tar only; `extra` holds passthrough columns of the input
    table (uid, source_file, source_row, ...), stored in the parquet and in the sample's json.
    """

    key: str
    url: str
    caption: str | None
    status: str  # "success" | "failed"
    error_message: str | None = None
    error_kind: str | None = None  # the failure's countable kind (stats' `errors`); not a column
    width: int | None = None
    height: int | None = None
    original_width: int | None = None
    original_height: int | None = None
    sha256: str | None = None
    phash: str | None = None  # 16 hex chars (64-bit pHash)
    phash_centre: str | None = None  # 16 hex chars: pHash of the centre (dedup.hashing.train_views)
    thumb: bytes | None = field(default=None, repr=False)  # PNG thumbnail (pipeline.thumbs): parquet only
    entry_ids: list[int] = field(default_factory=list)
    image: bytes | None = field(default=None, repr=False)
    image_ext: str = "jpg"
    extra: dict[str, Any] = field(default_factory=dict)

    def metadata(self) -> dict:
        """The row as img2dataset's per-sample json: every parquet column but the thumbnail."""
        meta = {name: getattr(self, name) for name in BASE_COLUMNS if name not in BINARY_COLUMNS}
        meta["entry_ids"] = [int(i) for i in self.entry_ids]
        meta.update(self.extra)
        return meta


# ---------------------------------------------------------------------------------------------
# Keys and names


def row_digits_for(rows_per_shard: int) -> int:
    """Digits of the row part of a key: 4 for 10,000 rows per shard (rows 0000..9999)."""
    if not isinstance(rows_per_shard, int) or rows_per_shard < 1:
        raise ValueError(f"rows_per_shard must be a positive int, got {rows_per_shard!r}")
    return len(str(rows_per_shard - 1))


def shard_digits_for(num_shards: int) -> int:
    """Digits of the shard part of a key and file name: enough for every shard id, at least 5."""
    if not isinstance(num_shards, int) or num_shards < 1:
        raise ValueError(f"num_shards must be a positive int, got {num_shards!r}")
    return max(MIN_SHARD_DIGITS, len(str(num_shards - 1)))


def sample_key(shard_id: int, row: int, shard_digits: int = MIN_SHARD_DIGITS, row_digits: int = 4) -> str:
    """img2dataset's key: the shard id zero-padded, then the row zero-padded ('000120042')."""
    _check_shard_id(shard_id)
    if not isinstance(row, int) or isinstance(row, bool) or not 0 <= row < 10**row_digits:
        raise ValueError(f"row must be an int in [0, {10**row_digits}), got {row!r}")
    return f"{shard_id:0{shard_digits}d}{row:0{row_digits}d}"


def shard_files(shard_id: int, shard_digits: int = MIN_SHARD_DIGITS) -> dict[str, str]:
    """The file names of one shard: {'tar': '00012.tar', 'parquet': ..., 'stats': ...}."""
    _check_shard_id(shard_id)
    name = f"{shard_id:0{shard_digits}d}"
    return {"tar": f"{name}.tar", "parquet": f"{name}.parquet", "stats": f"{name}_stats.json"}


class ShardNameError(ValueError):
    """A shard's `_stats.json` names data files that are not that shard's own (a crafted or
    damaged stats file): `stats` the stats file, `kind` tar or parquet, `name` what it gave."""

    def __init__(self, stats: str, kind: str, name, expected: str):
        self.stats, self.kind, self.name, self.expected = stats, kind, name, expected
        super().__init__(f"{stats}: names {kind} file {name!r}, but this shard's {kind} is "
                         f"{expected!r}; refusing a name read from data that is not the shard's own")


def data_files(stats_name: str, stats: dict) -> dict[str, str]:
    """{'tar', 'parquet'}: the data files of the committed shard whose stats file is
    `stats_name` ("00012_stats.json"). They are always the names the shard writer gives
    (`shard_files`); a stats file that names anything else — another shard, a path, an absolute
    name, `..` — is refused with ShardNameError, so no name read from data can lead a reader or
    a writer out of the shard's folder."""
    m = _STATS.match(stats_name)
    if not m:
        raise ValueError(f"{stats_name!r} is not a shard stats file name (NNNNN_stats.json)")
    expected = {"tar": f"{m.group(1)}.tar", "parquet": f"{m.group(1)}.parquet"}
    given = stats.get("files") if isinstance(stats, dict) else None
    if given is not None:
        for kind, name in expected.items():
            if not isinstance(given, dict) or given.get(kind) != name:
                raise ShardNameError(stats_name, kind, given.get(kind) if isinstance(given, dict) else given, name)
    return expected


def _check_shard_id(shard_id) -> None:
    if not isinstance(shard_id, int) or isinstance(shard_id, bool) or shard_id < 0:
        raise ValueError(f"shard_id must be a non-negative int, got {shard_id!r}")


# ---------------------------------------------------------------------------------------------
# Writing a shard


def write_shard(output_dir: str, shard_id: int, rows: list[ShardRow], stats: dict | None = None,
                shard_digits: int = MIN_SHARD_DIGITS, extra_types: dict[str, pa.DataType] | None = None
                ) -> dict:
    """Write and commit one shard; returns the stats written to its `_stats.json`.

    `rows` are every input row of the shard, in any order (written in key order). `stats` holds what
    only the caller knows: `start_time`/`end_time` (epoch seconds; or `duration`), `errors`
    ({kind: count} over the failed rows; default: failed rows counted by error_kind, else message),
    `failed_to_download`/`failed_to_resize` (img2dataset's two failure counts; default: every
    failure is a download failure), and any other JSON-able fields, copied as they are. Counts the
    writer computes itself (count, successes, ...) must agree with the rows if given.

    `extra_types` gives the parquet types of passthrough columns (the input table's schema), so every
    shard has the same schema even when a column is null throughout one shard; without it types are
    inferred from the values.
    """
    names = shard_files(shard_id, shard_digits)
    prefix = f"{shard_id:0{shard_digits}d}"
    for row in rows:
        _check_row(row, prefix)
    rows = sorted(rows, key=lambda r: (len(r.key), r.key))
    _check_unique_keys(rows)
    if set(extra_types or {}) & set(BASE_COLUMNS):
        raise ValueError(f"extra_types {sorted(set(extra_types) & set(BASE_COLUMNS))} clash with shard columns")
    extra_columns = _extra_columns(rows, extra_types or {})
    final_stats = _shard_stats(shard_id, rows, dict(stats or {}), names)

    storage = storage_for(output_dir)
    storage.makedirs(output_dir)
    temps = {}
    try:
        temps["tar"], tar_info = write_temp(storage, output_dir, names["tar"],
                                             lambda f: _write_tar(f, rows))
        parquet_data = parquet_bytes(_parquet_table(rows, extra_columns, extra_types or {}))
        temps["parquet"], parquet_info = write_temp(storage, output_dir, names["parquet"],
                                                     lambda f: f.write(parquet_data))
        final_stats.update(tar_bytes=tar_info["bytes"], tar_sha256=tar_info["sha256"],
                           parquet_bytes=parquet_info["bytes"])
        stats_bytes = (json.dumps(final_stats, indent=4) + "\n").encode("utf-8")
        temps["stats"], _ = write_temp(storage, output_dir, names["stats"],
                                        lambda f: f.write(stats_bytes))

        # Uncommit an earlier run's shard before its files change, then commit: stats last.
        stats_path = storage.join(output_dir, names["stats"])
        if storage.exists(stats_path):
            storage.delete(stats_path)
        for kind in ("tar", "parquet", "stats"):
            storage.replace(temps[kind], storage.join(output_dir, names[kind]))
            del temps[kind]
        storage.sync_folder(output_dir)
    finally:
        for temp in temps.values():  # left only when something failed before its rename
            try:
                storage.delete(temp)
            except Exception:  # noqa: BLE001 - remove_partial cleans what this cannot
                pass
    return final_stats


def _check_row(row: ShardRow, prefix: str) -> None:
    # Keys become file names: only digits, and this shard's prefix, whatever the input held.
    if not isinstance(row.key, str) or not _DIGITS.match(row.key) or not row.key.startswith(prefix) \
            or len(row.key) == len(prefix):
        raise ValueError(f"key {row.key!r} is not a key of shard {prefix} (use sample_key())")
    if row.status not in STATUSES:
        raise ValueError(f"row {row.key}: status must be one of {STATUSES}, got {row.status!r}")
    if row.status == "success":
        if not isinstance(row.image, (bytes, bytearray, memoryview)) or len(row.image) == 0:
            raise ValueError(f"row {row.key}: a successful row needs its image bytes")
        if row.image_ext not in IMAGE_EXTS:
            raise ValueError(f"row {row.key}: image_ext must be one of {IMAGE_EXTS}, got {row.image_ext!r}")
    for name in ("phash", "phash_centre"):
        value = getattr(row, name)
        if value is not None and not _PHASH.match(str(value)):
            raise ValueError(f"row {row.key}: {name} must be 16 lower-case hex chars, got {value!r}")
    if row.thumb is not None and not isinstance(row.thumb, (bytes, bytearray)):
        raise ValueError(f"row {row.key}: thumb must be bytes, got {type(row.thumb).__name__}")
    for entry in row.entry_ids:
        if not 0 <= int(entry) < 2**31:
            raise ValueError(f"row {row.key}: entry id {entry!r} out of int32 range")
    clash = set(row.extra) & set(BASE_COLUMNS)
    if clash:
        raise ValueError(f"row {row.key}: passthrough columns {sorted(clash)} clash with shard columns")


def _check_unique_keys(rows: list[ShardRow]) -> None:
    for before, after in zip(rows, rows[1:]):
        if before.key == after.key:
            raise ValueError(f"key {after.key} appears twice in the shard")


def _extra_columns(rows: list[ShardRow], extra_types: dict) -> list[str]:
    """Passthrough column names: the typed ones, then others in the order they first appear."""
    seen: dict[str, None] = dict.fromkeys(extra_types)
    for row in rows:
        for name in row.extra:
            seen.setdefault(name, None)
    return list(seen)


def _write_tar(f, rows: list[ShardRow]) -> None:
    # A stream of (name, bytes): {key}.{ext}, {key}.txt, {key}.json per successful row.
    with tarfile.open(fileobj=f, mode="w|", format=tarfile.USTAR_FORMAT) as tar:
        for row in rows:
            if row.status != "success":
                continue
            meta = json.dumps(_jsonable(row.metadata()), indent=4)
            for ext, data in ((row.image_ext, bytes(row.image)),
                              ("txt", (row.caption or "").encode("utf-8")),
                              ("json", meta.encode("utf-8"))):
                tar.addfile(_tar_header(f"{row.key}.{ext}", len(data)), io.BytesIO(data))


def _tar_header(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = TAR_MTIME
    info.mode = TAR_MODE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


def _jsonable(value):
    """Metadata as plain JSON: numpy values, dates and NaN from passthrough columns included."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (datetime.date, datetime.datetime, datetime.time)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8", errors="replace")
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return _jsonable(value.tolist())
    return value


def _parquet_table(rows: list[ShardRow], extra_columns: list[str], extra_types: dict) -> pa.Table:
    columns = {name: [getattr(r, name) for r in rows] for name in BASE_COLUMNS}
    columns["entry_ids"] = [[int(i) for i in r.entry_ids] for r in rows]
    arrays = [pa.array(columns[f.name], type=f.type) for f in PARQUET_FIELDS]
    fields = list(PARQUET_FIELDS)
    for name in extra_columns:
        values = [r.extra.get(name) for r in rows]
        try:
            array = pa.array(values, type=extra_types.get(name))
        except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
            raise ValueError(f"passthrough column {name!r}: {err}") from err
        arrays.append(array)
        fields.append(pa.field(name, array.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def parquet_bytes(table: pa.Table) -> bytes:
    # In memory first: a shard's metadata is a few MB, and pyarrow then needs no file-like wrapper.
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, row_group_size=max(1, table.num_rows), **PARQUET_OPTIONS)
    return sink.getvalue().to_pybytes()


def _shard_stats(shard_id: int, rows: list[ShardRow], given: dict, names: dict) -> dict:
    """img2dataset's `_stats.json` fields, plus shard_id, errors by kind and the file names."""
    count = len(rows)
    successes = sum(r.status == "success" for r in rows)
    failed = count - successes
    status_dict = collections.Counter(
        "success" if r.status == "success" else (r.error_message or "failed") for r in rows)
    errors = given.pop("errors", None)
    if errors is None:
        errors = collections.Counter(r.error_kind or r.error_message or "unknown" for r in rows if r.status != "success")
    errors = {str(k): int(v) for k, v in sorted(dict(errors).items())}
    if sum(errors.values()) != failed:
        raise ValueError(f"shard {shard_id}: errors {errors} add up to {sum(errors.values())}, "
                         f"but {failed} rows failed")
    failed_to_resize = int(given.pop("failed_to_resize", 0))
    failed_to_download = int(given.pop("failed_to_download", failed - failed_to_resize))
    if failed_to_download + failed_to_resize != failed:
        raise ValueError(f"shard {shard_id}: failed_to_download {failed_to_download} + "
                         f"failed_to_resize {failed_to_resize} != {failed} failed rows")
    end_time = float(given.pop("end_time", time.time()))
    start_time = float(given.pop("start_time", end_time))
    duration = float(given.pop("duration", end_time - start_time))

    computed = {
        "shard_id": shard_id,
        "count": count,
        "successes": successes,
        "failed_to_download": failed_to_download,
        "failed_to_resize": failed_to_resize,
        "duration": duration,
        "start_time": start_time,
        "end_time": end_time,
        "status_dict": dict(sorted(status_dict.items())),
        "errors": errors,
        "files": {"tar": names["tar"], "parquet": names["parquet"]},
    }
    for name, value in given.items():
        if name in computed and computed[name] != value:
            raise ValueError(f"shard {shard_id}: stats[{name!r}] = {value!r}, but the rows give "
                             f"{computed[name]!r}")
    return {**computed, **{k: v for k, v in given.items() if k not in computed}}


# ---------------------------------------------------------------------------------------------
# Reading back, resuming, cleaning


def committed_shards(output_dir: str) -> set[int]:
    """Ids of the shards whose `_stats.json` exists: the committed ones."""
    return {int(m.group(1)) for name in storage_for(output_dir).list(output_dir)
            if (m := _STATS.match(name))}


def remove_partial(output_dir: str) -> list[str]:
    """Delete what a killed run left: temporary files, and tar/parquet files of uncommitted shards.

    Returns the deleted paths. Run it when no writer is running on the folder (before a download
    starts): a live writer's temporary files look the same as a dead one's.
    """
    storage = storage_for(output_dir)
    names = storage.list(output_dir)
    committed = {int(m.group(1)) for name in names if (m := _STATS.match(name))}
    removed = []
    for name in names:
        data = _DATA.match(name)
        if TEMP_NAME.match(name) or (data and int(data.group(1)) not in committed):
            path = storage.join(output_dir, name)
            storage.delete(path)
            removed.append(path)
    return removed


def read_shard_stats(output_dir: str, shard_id: int, shard_digits: int = MIN_SHARD_DIGITS) -> dict:
    """The `_stats.json` of a committed shard (FileNotFoundError if it is not committed)."""
    storage = storage_for(output_dir)
    path = storage.join(output_dir, shard_files(shard_id, shard_digits)["stats"])
    if not storage.exists(path):
        raise FileNotFoundError(f"shard {shard_id} is not committed: {path} does not exist")
    with storage.open(path) as f:
        return json.loads(f.read().decode("utf-8"))


def read_shard_table(output_dir: str, shard_id: int, shard_digits: int = MIN_SHARD_DIGITS) -> pa.Table:
    """The parquet of a committed shard: every input row with its status, in key order."""
    storage = storage_for(output_dir)
    stats = read_shard_stats(output_dir, shard_id, shard_digits)
    path = storage.join(output_dir, data_files(shard_files(shard_id, shard_digits)["stats"], stats)["parquet"])
    with storage.open(path) as f:
        return pq.read_table(io.BytesIO(f.read()))


# ---------------------------------------------------------------------------------------------
# Manifest


def write_manifest(output_dir: str) -> dict:
    """Write `manifest.json` (atomically) listing every committed shard; returns it.

    Besides the shard list and totals it gives what OpenCLIP needs: `--train-data` (a brace
    pattern per run of consecutive shards, joined by `::`, which webdataset and OpenCLIP expand)
    and `--train-num-samples` (the total of successful samples).
    """
    storage = storage_for(output_dir)
    names = set(storage.list(output_dir))
    shards, incomplete = [], []
    for name in sorted(names, key=lambda n: (len(n), n)):
        m = _STATS.match(name)
        if not m:
            continue
        with storage.open(storage.join(output_dir, name)) as f:
            stats = json.loads(f.read().decode("utf-8"))
        files = data_files(name, stats)
        if files["tar"] not in names or files["parquet"] not in names:
            incomplete.append({"shard_id": int(m.group(1)), "stats": name,
                               "missing": sorted(n for n in files.values() if n not in names)})
            continue
        shards.append({
            "shard_id": int(m.group(1)),
            "tar": files["tar"],
            "parquet": files["parquet"],
            "stats": name,
            "samples": int(stats["successes"]),
            "rows": int(stats["count"]),
            "tar_bytes": stats.get("tar_bytes"),
            "tar_sha256": stats.get("tar_sha256"),
            "errors": stats.get("errors", {}),
        })
    shards.sort(key=lambda s: s["shard_id"])
    totals = {
        "shards": len(shards),
        "samples": sum(s["samples"] for s in shards),
        "rows": sum(s["rows"] for s in shards),
    }
    totals["failed"] = totals["rows"] - totals["samples"]
    totals["errors"] = dict(sorted(sum((collections.Counter(s.pop("errors")) for s in shards),
                                       collections.Counter()).items()))
    pattern = tar_pattern([s["tar"] for s in shards])
    base = output_dir if "://" in str(output_dir) else os.path.abspath(output_dir)
    manifest = {
        "format": "webdataset, img2dataset layout",
        "shards": shards,
        "totals": totals,
        "tar_pattern": pattern,
        "openclip": {
            "dataset_type": "webdataset",
            "train_data": "::".join(storage.join(base, p) for p in pattern.split("::")) if pattern else "",
            "train_num_samples": totals["samples"],
        },
        "incomplete": incomplete,
    }
    data = (json.dumps(manifest, indent=2) + "\n").encode("utf-8")
    atomic_write(storage.join(output_dir, MANIFEST), data)
    storage.sync_folder(output_dir)
    return manifest


def tar_pattern(tar_names: list[str]) -> str:
    """Brace patterns for shard tar names: '{00000..00012}.tar', runs joined by '::'.

    A run is consecutive ids of the same name width (braceexpand pads to the widest bound, so
    '{99999..100000}' could not keep 5-digit names); a run of one is the plain name.
    """
    ids = sorted((int(n.split(".")[0]), n.split(".")[0]) for n in tar_names)
    runs: list[list[tuple[int, str]]] = []
    for shard, digits in ids:
        last = runs[-1][-1] if runs else None
        if last and shard == last[0] + 1 and len(digits) == len(last[1]):
            runs[-1].append((shard, digits))
        else:
            runs.append([(shard, digits)])
    parts = [f"{run[0][1]}.tar" if len(run) == 1 else f"{{{run[0][1]}..{run[-1][1]}}}.tar" for run in runs]
    return "::".join(parts)
