"""`clipdata inspect KEY`: where a training sample came from, and whether it is contaminated.

    clipdata inspect 000120042 --shards run/shards
    clipdata inspect 000120042 --run run/          # a `clipdata build` folder

From a sample key it reads, without scanning anything else:
  - the shard parquet row (url, caption, status, size, sha256, pHash);
  - the pool file and row the pair was read from, and its uid (kept by curate, carried by
    download);
  - the query-list entries it matched (ids and text, from the list curate used);
  - its contamination status: whether a blocklist names it, and the test images it matched in a
    `clipdata dedup` report's pairs.csv.
"""
from __future__ import annotations

import csv
import json
import os

import pyarrow.parquet as pq


class InspectError(Exception):
    pass


def _shard_row(shards_dir: str, key: str) -> dict:
    """The parquet row of `key`: its shard is the key's leading digits."""
    candidates = sorted(f for f in os.listdir(shards_dir) if f.endswith(".parquet") and not f.startswith("."))
    for name in candidates:
        shard = name[: -len(".parquet")]
        if shard.isdigit() and key.startswith(shard):
            table = pq.read_table(os.path.join(shards_dir, name))
            rows = [r for r in table.to_pylist() if r["key"] == key]
            if rows:
                return {"shard": shard, **rows[0]}
    raise InspectError(f"no sample {key!r} in {shards_dir}: keys are the shard id then the row, "
                       "as in the shard's parquet `key` column")


def _entries_of(curated_dir: str | None, entry_ids: list[int]) -> list[dict]:
    if not curated_dir or not entry_ids:
        return [{"id": i} for i in entry_ids]
    stats_path = os.path.join(curated_dir, "curate_stats.json")
    counts_path = os.path.join(curated_dir, "entry_counts.parquet")
    if os.path.exists(counts_path):
        table = pq.read_table(counts_path)
        entries = table.column("entry").to_pylist()
        matched = table.column("matched").to_pylist()
        kept = table.column("kept").to_pylist()
        languages = table.column("language").to_pylist() if "language" in table.column_names else None
        return [{"id": i, "entry": entries[i], "pairs_matched": matched[i], "pairs_kept": kept[i],
                 **({"language": languages[i]} if languages else {})} for i in entry_ids]
    if os.path.exists(stats_path):
        from clipdata.query_lists.entries import load_entries

        entries = load_entries(json.load(open(stats_path))["queries"])
        return [{"id": i, "entry": entries[i]} for i in entry_ids]
    return [{"id": i} for i in entry_ids]


def _contamination(dedup_dir: str | None, blocklist: str | None, key: str) -> dict:
    status = {"checked": bool(dedup_dir or blocklist), "blocklisted": False, "matches": []}
    blocklist = blocklist or (os.path.join(dedup_dir, "blocklist.txt") if dedup_dir else None)
    if blocklist and os.path.exists(blocklist):
        with open(blocklist) as f:
            status["blocklisted"] = key in {line.strip() for line in f}
    pairs = os.path.join(dedup_dir, "pairs.csv") if dedup_dir else None
    if pairs and os.path.exists(pairs):
        with open(pairs, newline="") as f:
            for row in csv.DictReader(f):
                if row.get("train_key", row.get("key")) == key:
                    status["matches"].append(row)
    return status


def inspect(key: str, shards_dir: str, curated_dir: str | None = None, dedup_dir: str | None = None,
            blocklist: str | None = None) -> dict:
    if not key.isdigit():
        raise InspectError(f"{key!r} is not a sample key: keys are digits (shard id, then row)")
    row = _shard_row(shards_dir, key)
    return {
        "key": key,
        "shard": row["shard"],
        "sample": {k: row.get(k) for k in ("url", "caption", "status", "error_message", "width", "height",
                                            "original_width", "original_height", "sha256", "phash",
                                            "phash_centre")},
        "source": {k: row.get(k) for k in ("uid", "source_file", "source_row", "page_url")},
        "entries": _entries_of(curated_dir, row.get("entry_ids") or []),
        "contamination": _contamination(dedup_dir, blocklist, key),
    }


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser("inspect", help="provenance of a training sample: pool row, entries, contamination")
    parser.add_argument("key", help="a sample key, e.g. 000120042")
    parser.add_argument("--run", help="a `clipdata build` output folder (shards/, curated/, dedup/ inside)")
    parser.add_argument("--shards", help="the shards folder (default: RUN/shards)")
    parser.add_argument("--curated", help="the curate output folder (default: RUN/curated)")
    parser.add_argument("--dedup", help="a `clipdata dedup` output folder (default: RUN/dedup)")
    parser.add_argument("--blocklist", help="a blocklist file (default: DEDUP/blocklist.txt)")
    parser.set_defaults(handler=run_inspect, beam=False)


def run_inspect(args, extra) -> int:
    from clipdata.pipeline.foundation.errors import UsageError

    def pick(explicit, name):
        if explicit:
            return explicit
        if args.run and os.path.isdir(os.path.join(args.run, name)):
            return os.path.join(args.run, name)
        return None

    shards_dir = pick(args.shards, "shards")
    if not shards_dir:
        if args.run:
            raise UsageError(f"--run {args.run} has no shards/ folder (a `clipdata build` folder holds one); "
                             "give the shards with --shards DIR")
        raise UsageError("give --shards DIR or --run DIR (a `clipdata build` folder)")
    try:
        report = inspect(args.key, shards_dir, pick(args.curated, "curated"), pick(args.dedup, "dedup"), args.blocklist)
    except (InspectError, OSError) as err:
        raise UsageError(str(err)) from err
    print(json.dumps(report, indent=2, ensure_ascii=False, default=str))
    return 0
