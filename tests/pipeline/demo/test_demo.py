"""`clipdata demo` end to end at a reduced size: each stage's outputs, not just the exit code."""
import csv
import json
import os

import pytest

from clipdata.pipeline import cli
from clipdata.pipeline.inspect import shard_check
from clipdata.query_lists import entries

import browser


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """One reduced demo run; its outputs are read by the tests below."""
    out = str(tmp_path_factory.mktemp("demo") / "demo")
    assert cli.main(["demo", "--output", out, "--pages", "400", "--images", "400", "--test-images", "80",
                     "--planted", "8", "--train-steps", "24", "--batch-size", "32"]) == 0
    return out


@pytest.mark.slow
def test_demo_runs_every_stage(demo):
    out = demo

    queries = entries.load_entries(os.path.join(out, "queries", "queries.txt"))
    assert queries[:100] == [str(i) for i in range(100)]
    assert {"circle", "red", "star", "purple"} <= set(queries)  # the web's words reached the list

    stats = json.load(open(os.path.join(out, "curated", "curate_stats.json")))
    assert stats["rows_read"] == stats["rows_kept"] + sum(stats["dropped"].values())
    # worldwide: every demo language has its list and keeps pairs; English keeps the demo's t
    manifest = json.load(open(os.path.join(out, "queries", "manifest.json")))
    assert list(manifest["languages"]) == ["en", "ar", "de", "ja", "th", "zh"]
    languages = stats["languages"]
    assert all(languages[k]["pairs_kept"] > 0 for k in manifest["languages"]), languages
    assert languages["en"]["t"] == 150
    assert sum(v["pairs_kept"] for v in languages.values()) == stats["rows_kept"]
    assert stats["rows_kept"] > 250   # of 400 images: a fifth in five languages, some misidentified
    assert {"bad-url", "empty-caption", "duplicate"} <= set(stats["dropped"])

    manifest = json.load(open(os.path.join(out, "shards", "manifest.json")))
    assert manifest["totals"]["rows"] == stats["rows_kept"]  # every curated pair has a row
    assert manifest["totals"]["samples"] > 0.9 * stats["rows_kept"] - 40  # faults fail, images succeed
    assert shard_check.check_paths([os.path.join(out, "shards")]) == []

    # Contamination: copies are planted from images that reached the shards, and every one is
    # found; the held-out set (new pictures only) is clean.
    report = json.load(open(os.path.join(out, "dedup", "report.json")))
    planted = json.load(open(os.path.join(out, "testsets", "planted", "test_set.json")))
    web = json.load(open(os.path.join(out, "web", "web.json")))
    in_shards = {r["url"].rsplit("/", 1)[-1] for r in _shard_rows(os.path.join(out, "shards")) if r["status"] == "success"}
    by_id = {image["id"]: image for image in web["images"]}
    expected = {image["path"] for image in planted["images"] if image["kind"] == "planted"}
    assert len(expected) == 8
    assert all(by_id[image["source"]]["url"].rsplit("/", 1)[-1] in in_shards
               for image in planted["images"] if image["kind"] == "planted")
    by_name = {s["name"]: s for s in report["test_sets"]}
    assert expected <= set(by_name["planted"]["overlap_ids"])
    assert by_name["heldout"]["overlap"] == 0, by_name["heldout"]["overlap_ids"]
    blocklist = open(os.path.join(out, "dedup", "blocklist.txt")).read().split()
    clean = json.load(open(os.path.join(out, "shards_clean", "manifest.json")))
    assert clean["totals"]["samples"] == manifest["totals"]["samples"] - len(blocklist)

    log = [json.loads(line) for line in open(os.path.join(out, "train", "log.jsonl"))]
    losses = [r["loss"] for r in log if "loss" in r]
    assert losses[-1] < losses[0]
    evals = [r for r in log if "zeroshot/top1" in r]
    assert evals and evals[-1]["zeroshot/n"] == 80
    # 24 steps teach little: the check is that the logged accuracy is the per-example file's
    last = sorted(os.listdir(os.path.join(out, "train", "eval")))[-1]
    with open(os.path.join(out, "train", "eval", last)) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 80 and all(r["correct"] == str(int(r["label"] == r["predicted"])) for r in rows)
    assert evals[-1]["zeroshot/top1"] == pytest.approx(sum(int(r["correct"]) for r in rows) / 80)

    page = open(os.path.join(out, "index.html")).read()
    for section in ("Query list", "Curate", "Download", "Contamination", "Train"):
        assert section in page
    assert "<script" not in page and page.count('<img class="plot"') == 6
    assert "Pairs per language, before and after balancing" in page
    # what to take away comes first, and says what the report says
    first = page.split("What to take away", 1)[1].split("</ul>", 1)[0]
    assert "8 of 8 planted copies of training images found" in first
    assert "0 of 80 held-out test images flagged" in first
    summary = json.load(open(os.path.join(out, "demo_summary.json")))
    assert summary["samples"] == manifest["totals"]["samples"]
    assert (summary["planted"], summary["planted_found"], summary["heldout"], summary["heldout_flagged"]) == (8, 8, 80, 0)
    assert summary["lookalikes"] == 4 and summary["lookalikes_flagged"] == len(
        {i["path"] for i in planted["images"] if i["kind"] == "lookalike"} & set(by_name["planted"]["overlap_ids"]))
    steps = summary["seconds"]
    assert list(steps)[:4] == ["queries", "synthetic web", "curate", "download"] and "train + zero-shot" in steps
    assert 0 < sum(v for k, v in steps.items() if k != "total") <= steps["total"] + 0.05 * len(steps)  # rounding
    assert "Time per step" in page


def _shard_rows(folder):
    import pyarrow.parquet as pq

    return [r for f in sorted(os.listdir(folder)) if f.endswith(".parquet")
            for r in pq.read_table(os.path.join(folder, f)).to_pylist()]


@pytest.mark.slow
def test_pages_load_in_a_real_browser_with_every_chart_and_thumbnail(demo):
    """index.html and report.html in headless Chromium at a normal screen's width: every image and
    chart loads, no console error, nothing wider than the window."""
    chromium = browser.chromium_path()
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("no Chromium on this machine: `make system-deps` installs Debian's chromium")
        pytest.skip("no Chromium installed (make system-deps installs it)")
    with browser.Browser(chromium) as b:
        index = b.load(os.path.join(demo, "index.html"), width=1280)
        assert index.errors == []
        assert len(index.images) == 6 and all(i["loaded"] and i["width"] > 300 for i in index.images), index.images
        assert index.overflow_px == 0
        assert "What to take away" in index.text and "8 of 8 planted copies" in index.text

        report = b.load(os.path.join(demo, "dedup", "report.html"), width=1280)
        assert report.errors == []
        # the overlap bars and the planted set's histogram; the held-out set has no training
        # image near any of its images (the copy descriptor finds none alike): said in words
        charts = [i for i in report.images if i["width"] > 300]
        thumbs = [i for i in report.images if i["width"] <= 300]
        assert len(charts) == 2 and len(thumbs) >= 2 * 8
        assert "No test image of this set has a training image that close" in report.text
        assert all(i["loaded"] for i in report.images), [i for i in report.images if not i["loaded"]]
        assert report.overflow_px == 0
        assert "What to take away" in report.text
        for page in ("index.html", os.path.join("dedup", "report.html")):   # a smaller screen: no sideways scroll
            assert b.load(os.path.join(demo, page), width=1024).overflow_px == 0, page
