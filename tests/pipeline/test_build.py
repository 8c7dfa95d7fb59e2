"""`clipdata build`: queries -> curate -> download -> dedup -> blocklist for real-format inputs."""
import json
import os

import pytest

from clipdata.pipeline import cli
from clipdata.pipeline.demo import run as demo, synthetic_web


@pytest.mark.slow
def test_build_from_sources_with_a_test_set_runs_every_stage_and_resumes(tmp_path, capsys):
    sources = demo.write_demo_sources(str(tmp_path / "sources"), pages=300, seed=0)
    web = synthetic_web.build_web(str(tmp_path / "web"), 80, seed=0, vocabulary=sources["vocabulary"])
    planted = synthetic_web.build_test_set(str(tmp_path / "test"), 40, seed=1, planted_from=web, planted_count=4)
    run = str(tmp_path / "run")
    with synthetic_web.serve(str(tmp_path / "web")) as base:
        synthetic_web.write_pool(web, base, str(tmp_path / "pool.parquet"))
        args = ["build", "--pool", str(tmp_path / "pool.parquet"), "--output", run,
                "--wikipedia", sources["dump"], "--wikipedia-index", sources["index"],
                "--pageviews", sources["pageviews"], "--wordnet", sources["wordnet"],
                "--test-set", f"synthetic={tmp_path / 'test'}", "--allow-private-addresses", "--timeout", "5"]
        assert cli.main(args) == 0
        for kept in ("queries/queries.txt", "curated/curate_stats.json", "shards/manifest.json",
                     "dedup/report.json", "dedup/blocklist.txt", "shards_clean/manifest.json"):
            assert os.path.exists(os.path.join(run, kept)), kept
        report = json.load(open(os.path.join(run, "dedup", "report.json")))
        assert report["test_sets"][0]["overlap"] >= 1
        blocked = open(os.path.join(run, "dedup", "blocklist.txt")).read().split()
        before = json.load(open(os.path.join(run, "shards", "manifest.json")))["totals"]["samples"]
        after = json.load(open(os.path.join(run, "shards_clean", "manifest.json")))["totals"]["samples"]
        assert after == before - len(blocked) and blocked

        capsys.readouterr()
        assert cli.main(args) == 0  # every stage's outputs exist: each is skipped or resumes
        out = capsys.readouterr().out
        lines = out.splitlines()
        for name in ("queries", "curate", "dedup", "blocklist"):   # each stage's own line says it
            assert [line for line in lines if f"] {name}: " in line and "exists, skipped" in line], (name, out)
    assert planted["images"]


def test_build_needs_a_list_or_its_sources(tmp_path, capsys):
    assert cli.main(["build", "--pool", str(tmp_path), "--output", str(tmp_path / "run")]) == 2
    assert "either --queries" in capsys.readouterr().err
