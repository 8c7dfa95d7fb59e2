"""Drop blocklisted training samples from shards, keeping the layout and every other byte.

    clipdata dedup apply-blocklist --shards shards/ --blocklist report/blocklist.txt --output clean/

`blocklist.txt` (written by `clipdata dedup`) holds training keys, one per line ('#' comments and
blank lines are skipped; anything after the key on a line is ignored). For every committed shard of
`--shards` the output folder gets the same three files, as one Beam job with a shard per element:

    {shard}.tar       the same members in the same order, minus the blocked samples' members; every
                      kept member is copied as raw bytes (header and data), so a sample not blocked
                      is byte-identical, and a shard with nothing blocked is copied unchanged
    {shard}.parquet   EVERY row still, so each input row stays accounted for: a blocked row gets
                      status "blocked" and error_message "contamination: test set NAME (test ID)"
                      (a third status rather than "failed", so nothing retries it as a failed
                      download and a reader can tell removed-on-purpose from lost)
    {shard}_stats.json  successes lowered; "blocked": n added; errors["blocked"] and
                      status_dict["blocked"] added, so count = successes + sum(errors) still holds
                      (and manifest totals stay consistent); tar bytes and sha256 recomputed;
                      written last, the commit marker, as `clipdata download` does

then `manifest.json` (pipeline/shards.write_manifest) and `blocklist_applied.json`: keys listed,
keys found and blocked, keys not in any shard (the first 100 named), shards rewritten / copied, and
every shard that could not be read (named with its error; its files are not written).

The reason text comes from the `report.json` beside the blocklist when there is one (or `reasons`).
"""
from __future__ import annotations

import io
import json
import os
import re
import tarfile
import time

import apache_beam as beam
from apache_beam.metrics import Metrics

from clipdata.pipeline.foundation import beam_runner, failures, folder_lock, progress, shards, webdataset_tars
from clipdata.pipeline.foundation.storage import atomic_write, storage_for, write_temp

BLOCKED = "blocked"
_STATS = re.compile(r"^(\d+)_stats\.json$")
BLOCK = 512
RECORD = 20 * BLOCK                           # tarfile pads an archive to a multiple of this


class BlocklistError(Exception):
    """The blocklist or folders cannot be used as given; the message says why."""


# ---------------------------------------------------------------------------------------------
# Reading the blocklist and the reasons


def parse_blocklist(text: str) -> set[str]:
    keys = set()
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            keys.add(line.split()[0])
    return keys


def read_blocklist(path: str) -> set[str]:
    storage = storage_for(path)
    if not storage.exists(path):
        raise BlocklistError(f"blocklist {path} does not exist")
    with storage.open(path) as f:
        return parse_blocklist(f.read().decode("utf-8"))


def reasons_from_report(report: dict) -> dict[str, str]:
    """key -> 'contamination: test set cifar10 (test 000123)' from a report.json's matches."""
    found: dict[str, list[str]] = {}
    for test_set in report.get("test_sets", []):
        for match in test_set.get("matches", []):
            found.setdefault(match["key"], []).append(f"{test_set['name']} ({match['test_id']})")
    return {key: "contamination: test set " + ", ".join(sorted(set(where))[:5])
            + (f" and {len(set(where)) - 5} more" if len(set(where)) > 5 else "")
            for key, where in found.items()}


def reasons_beside(blocklist_path: str) -> dict[str, str]:
    """Reasons from the report.json written next to the blocklist, if it is there."""
    report_path = os.path.join(os.path.dirname(blocklist_path), "report.json")
    if "://" in blocklist_path or not os.path.exists(report_path):
        return {}
    try:
        with open(report_path, encoding="utf-8") as f:
            return reasons_from_report(json.load(f))
    except (OSError, ValueError, KeyError, TypeError):
        return {}


# ---------------------------------------------------------------------------------------------
# One shard (plain Python)


def list_committed(shards_dir: str) -> list[str]:
    """Stats file names of the committed shards of a folder, in shard order."""
    names = storage_for(shards_dir).list(shards_dir)
    return sorted((n for n in names if _STATS.match(n)), key=lambda n: (len(n), n))


def _padded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


def _tar_ranges(handle) -> list[tuple[str, int, int]]:
    """(key, start, end) of every member: header(s) through padded data, in archive order."""
    ranges = []
    with tarfile.open(fileobj=handle, mode="r:") as tar:
        for member in tar:
            ranges.append((webdataset_tars.member_key(member.name), member.offset, member.offset_data + _padded(member.size)))
    return ranges


def _copy_ranges(src, out, ranges: list[tuple[int, int]], chunk: int = 1 << 20) -> int:
    written = 0
    for start, end in ranges:
        src.seek(start)
        left = end - start
        while left:
            data = src.read(min(chunk, left))
            if not data:
                raise EOFError(f"tar ends inside a member at byte {end - left}")
            out.write(data)
            left -= len(data)
            written += len(data)
    # End of archive (two zero blocks), padded to whole records: what tarfile itself writes.
    tail = 2 * BLOCK
    tail += (-(written + tail)) % RECORD
    out.write(b"\0" * tail)
    return written


def filter_shard(shards_dir: str, stats_name: str, blocklist: set[str], output_dir: str,
                 reasons: dict[str, str] | None = None) -> dict:
    """Write one shard of shards_dir into output_dir without its blocklisted samples.

    Returns {"shard", "blocked": [keys], "rewritten": bool}. Raises on an unreadable shard (the
    caller records it); nothing of this shard is committed in output_dir then.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    reasons = reasons or {}
    source, target = storage_for(shards_dir), storage_for(output_dir)
    with source.open(source.join(shards_dir, stats_name)) as f:
        stats = json.loads(f.read().decode("utf-8"))
    files = shards.data_files(stats_name, stats)   # never a name that leaves the folder
    tar_path, parquet_path = (source.join(shards_dir, files[k]) for k in ("tar", "parquet"))
    with source.open(parquet_path) as f:
        parquet_data = f.read()
    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(parquet_data))
    keys = table.column("key").to_pylist()
    status = table.column("status").to_pylist()
    blocked = [k for k, s in zip(keys, status) if s == "success" and k in blocklist]

    target.makedirs(output_dir)
    temps = {}
    try:
        if not blocked:
            # Nothing to drop: the three files as they are.
            with source.open(tar_path) as src:
                temps["tar"], _ = write_temp(target, output_dir, files["tar"],
                                                     lambda out: _copy_stream(src, out))
            temps["parquet"], _ = write_temp(target, output_dir, files["parquet"],
                                                     lambda out: out.write(parquet_data))
            new_stats = stats
        else:
            blocked_set = set(blocked)
            with source.open(tar_path) as src:
                ranges = _tar_ranges(src)
            found = {k for k, _, _ in ranges}
            missing = blocked_set - found
            if missing:
                raise ValueError(f"{files['tar']}: rows {sorted(missing)[:5]} are successes in the "
                                 "parquet but have no members in the tar")
            kept = [(start, end) for key, start, end in ranges if key not in blocked_set]
            with source.open(tar_path) as src:
                temps["tar"], tar_info = write_temp(target, output_dir, files["tar"],
                                                            lambda out: _copy_ranges(src, out, kept))
            is_blocked = pa.array([k in blocked_set and s == "success" for k, s in zip(keys, status)])
            messages = [reasons.get(k, "contamination: in blocklist") if k in blocked_set and s == "success"
                        else m for k, s, m in zip(keys, status, table.column("error_message").to_pylist())]
            table = table.set_column(table.schema.get_field_index("status"), "status",
                                     pc.if_else(is_blocked, BLOCKED, table.column("status")))
            table = table.set_column(table.schema.get_field_index("error_message"), "error_message",
                                     pa.array(messages, pa.string()))
            parquet_bytes = shards.parquet_bytes(table)
            temps["parquet"], parquet_info = write_temp(target, output_dir, files["parquet"],
                                                                lambda out: out.write(parquet_bytes))
            new_stats = blocked_stats(stats, len(blocked), tar_info, parquet_info)
        stats_bytes = (json.dumps(new_stats, indent=4) + "\n").encode("utf-8")
        temps["stats"], _ = write_temp(target, output_dir, stats_name, lambda out: out.write(stats_bytes))
        stats_path = target.join(output_dir, stats_name)
        if target.exists(stats_path):  # uncommit an earlier run's shard before its files change
            target.delete(stats_path)
        for kind, name in (("tar", files["tar"]), ("parquet", files["parquet"]), ("stats", stats_name)):
            target.replace(temps.pop(kind), target.join(output_dir, name))
        target.sync_folder(output_dir)
    finally:
        for temp in temps.values():
            try:
                target.delete(temp)
            except Exception:  # noqa: BLE001 - remove_partial cleans what this cannot
                pass
    return {"shard": stats_name, "blocked": sorted(blocked), "rewritten": bool(blocked)}


def _copy_stream(src, out, chunk: int = 1 << 20) -> None:
    while data := src.read(chunk):
        out.write(data)


def blocked_stats(stats: dict, n_blocked: int, tar_info: dict, parquet_info: dict) -> dict:
    """A shard's stats after n_blocked more of its successes were blocked."""
    new = dict(stats)
    new["successes"] = int(stats["successes"]) - n_blocked
    new[BLOCKED] = int(stats.get(BLOCKED, 0)) + n_blocked
    errors = dict(stats.get("errors", {}))
    errors[BLOCKED] = errors.get(BLOCKED, 0) + n_blocked
    new["errors"] = dict(sorted(errors.items()))
    status_dict = dict(stats.get("status_dict", {}))
    if "success" in status_dict:
        status_dict["success"] -= n_blocked
    status_dict[BLOCKED] = status_dict.get(BLOCKED, 0) + n_blocked
    new["status_dict"] = dict(sorted(status_dict.items()))
    new.update(tar_bytes=tar_info["bytes"], tar_sha256=tar_info["sha256"], parquet_bytes=parquet_info["bytes"])
    return new


# ---------------------------------------------------------------------------------------------
# Beam


class FilterShardFn(beam.DoFn):
    """stats file name -> the shard written without its blocked samples; errors to 'shard_errors'."""

    def __init__(self, shards_dir: str, blocklist: set[str], output_dir: str, reasons: dict[str, str]):
        self.shards_dir, self.blocklist, self.output_dir, self.reasons = shards_dir, blocklist, output_dir, reasons
        self.rewritten = Metrics.counter("blocklist", "shards_rewritten")
        self.copied = Metrics.counter("blocklist", "shards_copied")
        self.samples_blocked = Metrics.counter("blocklist", "samples_blocked")
        self.errors = Metrics.counter("blocklist", "shards_unreadable")

    def process(self, stats_name: str):
        try:
            done = filter_shard(self.shards_dir, stats_name, self.blocklist, self.output_dir, self.reasons)
        except Exception as err:  # noqa: BLE001 - a bad shard is named, the others go on
            self.errors.inc()
            yield beam.pvalue.TaggedOutput("shard_errors", {"shard": stats_name, "error": failures.describe(err)})
            return
        (self.rewritten if done["rewritten"] else self.copied).inc()
        self.samples_blocked.inc(len(done["blocked"]))
        yield done


class FilterShards(beam.PTransform):
    def __init__(self, shards_dir: str, blocklist: set[str], output_dir: str, reasons: dict[str, str]):
        super().__init__()
        self.args = (shards_dir, blocklist, output_dir, reasons)

    def expand(self, stats_names):
        return (
            stats_names
            | "SpreadShards" >> beam.Reshuffle()
            | "FilterShard" >> beam.ParDo(FilterShardFn(*self.args)).with_outputs("shard_errors", main="done")
        )


def apply_blocklist(shards_dir: str, blocklist, output_dir: str, reasons: dict[str, str] | None = None,
                    beam_args: list[str] | None = None) -> dict:
    """Write every committed shard of shards_dir to output_dir without the blocklisted samples.

    `blocklist`: a path to a blocklist file, or an iterable of keys. Returns the summary also written
    to output_dir/blocklist_applied.json.
    """
    if isinstance(blocklist, (str, os.PathLike)):
        blocklist_path = str(blocklist)
        keys = read_blocklist(blocklist_path)
        if reasons is None:
            reasons = reasons_beside(blocklist_path)
    else:
        blocklist_path, keys = None, {str(k) for k in blocklist}
    reasons = reasons or {}
    if os.path.abspath(str(shards_dir)) == os.path.abspath(str(output_dir)):
        raise BlocklistError("--output must be a new folder, not the --shards folder itself")
    stats_names = list_committed(str(shards_dir))
    if not stats_names:
        raise BlocklistError(f"{shards_dir}: no committed shards (*_stats.json) found")
    storage_for(str(output_dir)).makedirs(str(output_dir))
    with folder_lock.writer_lock(str(output_dir), "dedup apply-blocklist"):   # one writer per folder
        return _apply(shards_dir, stats_names, keys, reasons, blocklist_path, str(output_dir), beam_args)


class ShardsWritten(progress.Watcher):
    """Progress of the job, seen from the driver: the output folder's committed shards (a shard's
    stats file is written last), of all, with rate and ETA; local or remote."""

    def __init__(self, output_dir: str, total: int, stream=None):
        super().__init__(stream, cut=" (")
        self.output_dir, self.total = output_dir, total

    def text(self) -> str:
        done = len(list_committed(self.output_dir))
        elapsed = max(time.time() - self.started, 1e-9)
        return (f"apply-blocklist: wrote {done:,}/{self.total:,} shards ({done / elapsed:,.1f}/s, "
                f"ETA {progress.eta(done, self.total, elapsed)})")


def _apply(shards_dir, stats_names: list[str], keys: set[str], reasons: dict[str, str], blocklist_path,
           output_dir: str, beam_args) -> dict:
    results_prefix = storage_for(str(output_dir)).join(str(output_dir), "_blocklist_results")
    p = beam_runner.make_pipeline(beam_args)
    out = (p | "StatsFiles" >> beam.Create(stats_names)
           | "FilterShards" >> FilterShards(str(shards_dir), keys, str(output_dir), reasons))
    ((out.done, out.shard_errors) | "AllResults" >> beam.Flatten()
     | "Format" >> beam.Map(json.dumps) | "WriteResults" >> beam.io.WriteToText(results_prefix, ".jsonl"))
    with ShardsWritten(str(output_dir), len(stats_names)):
        p.run().wait_until_finish()

    results = _read_and_delete(results_prefix)
    errors = sorted((r for r in results if "error" in r), key=lambda r: r["shard"])
    done = [r for r in results if "error" not in r]
    blocked = sorted(k for r in done for k in r["blocked"])
    not_found = sorted(keys - set(blocked))
    manifest = shards.write_manifest(str(output_dir))
    summary = {
        "shards_dir": str(shards_dir),
        "output": str(output_dir),
        "blocklist": blocklist_path,
        "keys_listed": len(keys),
        "samples_blocked": len(blocked),
        "keys_not_found": len(not_found),
        "keys_not_found_examples": not_found[:100],
        "shards": len(stats_names),
        "shards_rewritten": sum(r["rewritten"] for r in done),
        "shards_copied": sum(not r["rewritten"] for r in done),
        "shards_unreadable": errors,
        "totals": manifest["totals"],
    }
    storage = storage_for(str(output_dir))
    atomic_write(storage.join(str(output_dir), "blocklist_applied.json"),
                 (json.dumps(summary, indent=2) + "\n").encode("utf-8"))
    return summary


def _read_and_delete(prefix: str) -> list[dict]:
    from apache_beam.io.filesystems import FileSystems

    rows = []
    for match in FileSystems.match([prefix + "*"])[0].metadata_list:
        with FileSystems.open(match.path) as handle:
            rows += [json.loads(line) for line in handle.read().decode("utf-8").splitlines() if line]
        FileSystems.delete([match.path])
    return rows
