"""`clipdata demo` end to end at a reduced size: each stage's outputs, not just the exit code."""
import json
import os

import pytest

from clipdata.pipeline import cli, shard_check
from clipdata.query_lists import entries


@pytest.mark.slow
def test_demo_runs_every_built_stage(tmp_path):
    out = str(tmp_path / "demo")
    assert cli.main(["demo", "--output", out, "--pages", "400", "--images", "400"]) == 0

    queries = entries.load_entries(os.path.join(out, "queries", "queries.txt"))
    assert queries[:100] == [str(i) for i in range(100)]
    assert {"circle", "red", "star", "purple"} <= set(queries)  # the web's words reached the list

    stats = json.load(open(os.path.join(out, "curated", "curate_stats.json")))
    assert stats["rows_read"] == stats["rows_kept"] + sum(stats["dropped"].values())
    assert stats["rows_kept"] > 300
    assert {"bad-url", "empty-caption", "duplicate"} <= set(stats["dropped"])

    manifest = json.load(open(os.path.join(out, "shards", "manifest.json")))
    assert manifest["totals"]["rows"] == stats["rows_kept"]  # every curated pair has a row
    assert manifest["totals"]["samples"] > 0.9 * stats["rows_kept"] - 40  # faults fail, images succeed
    assert shard_check.check_paths([os.path.join(out, "shards")]) == []

    summary = json.load(open(os.path.join(out, "demo_summary.json")))
    assert summary["samples"] == manifest["totals"]["samples"]
