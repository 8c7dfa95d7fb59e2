"""Every Beam stage once on Beam's portable runner (the path Flink and Spark jobs take), against
the default in-process runner: the same outputs.

`--runner PortableRunner --job_endpoint embed --environment_type LOOPBACK` runs the job service in
this process and the workers as its threads: no cluster, nothing downloaded. It differs from the
in-process runner where a cluster does: the job is submitted through the Job API, its steps are
fused by the portable runner's own optimiser, and its counters report only committed values.
"""
import glob
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clipdata.pipeline import cli
from clipdata.pipeline.demo import run as demo, synthetic_web
from clipdata.pipeline.foundation import beam_runner

PORTABLE = ["--runner", "PortableRunner", "--job_endpoint", "embed", "--environment_type", "LOOPBACK"]


def _bytes(folder: str, pattern: str) -> dict[str, bytes]:
    return {os.path.basename(p): open(p, "rb").read() for p in sorted(glob.glob(os.path.join(folder, pattern)))}


def _curated_rows(run: str) -> list[dict]:
    table = pa.concat_tables([pq.read_table(p) for p in sorted(glob.glob(os.path.join(run, "curated", "curated", "*.parquet")))])
    return sorted(table.to_pylist(), key=lambda r: json.dumps(r, sort_keys=True, default=str))


def _report(run: str) -> list:
    report = json.load(open(os.path.join(run, "dedup", "report.json")))
    keep = ("name", "size", "readable", "overlap", "matched_pairs", "rejected_pairs", "overlap_ids",
            "nearest_distance_histogram")
    return [{k: s[k] for k in keep} | {"matches": sorted((m["test_id"], m["key"]) for m in s["matches"])}
            for s in report["test_sets"]]


@pytest.mark.slow
def test_every_stage_gives_the_same_outputs_on_the_portable_runner(tmp_path, monkeypatch):
    made = []   # the runner of every job each run starts
    real = beam_runner.make_pipeline
    monkeypatch.setattr(beam_runner, "make_pipeline",
                        lambda beam_args=None: made.append(type((p := real(beam_args)).runner).__name__) or p)
    sources = demo.write_demo_sources(str(tmp_path / "sources"), pages=200, seed=3)
    web = synthetic_web.build_web(str(tmp_path / "web"), 60, seed=3, vocabulary=sources["vocabulary"])
    synthetic_web.build_test_set(str(tmp_path / "test"), 20, seed=4, planted_from=web, planted_count=3)
    runs = {}
    with synthetic_web.serve(str(tmp_path / "web")) as base:
        synthetic_web.write_pool(web, base, str(tmp_path / "pool.parquet"))
        for name, runner in (("default", []), ("portable", PORTABLE)):
            runs[name] = run = str(tmp_path / name)
            assert cli.main(["build", "--pool", str(tmp_path / "pool.parquet"), "--output", run,
                             "--wikipedia", sources["dump"], "--wikipedia-index", sources["index"],
                             "--pageviews", sources["pageviews"], "--wordnet", sources["wordnet"],
                             "--test-set", f"synthetic={tmp_path / 'test'}", "--allow-private-addresses",
                             "--timeout", "5", *runner]) == 0, name
            runs[name + " runners"], made[:] = sorted(set(made)), []
    assert runs["default runners"] == ["FnApiRunner"] and runs["portable runners"] == ["PortableRunner"]
    default, portable = runs["default"], runs["portable"]
    # queries build: the same list, the same counts beside it
    assert _bytes(portable, "queries/queries.txt") == _bytes(default, "queries/queries.txt")
    counters = [json.load(open(os.path.join(r, "queries", "queries.json")))["counters"] for r in (default, portable)]
    assert counters[0] == counters[1] and counters[0]
    # curate: the same rows kept, the same counts (committed counters only, on the portable runner)
    assert _curated_rows(portable) == _curated_rows(default) and _curated_rows(default)
    stats = [json.load(open(os.path.join(r, "curated", "curate_stats.json"))) for r in (default, portable)]
    for key in ("rows_read", "rows_matched", "rows_kept", "dropped", "entries_matched", "entries_kept"):
        assert stats[0][key] == stats[1][key], key
    # download and apply-blocklist: byte-identical shards
    for folder in ("shards", "shards_clean"):
        for pattern in ("*.tar", "*.parquet"):
            made = _bytes(os.path.join(default, folder), pattern)
            assert made and _bytes(os.path.join(portable, folder), pattern) == made, (folder, pattern)
    # dedup: the same pairs, the same blocklist
    assert _report(portable) == _report(default) and _report(default)[0]["overlap"] >= 1
    assert _bytes(portable, "dedup/blocklist.txt") == _bytes(default, "dedup/blocklist.txt")
