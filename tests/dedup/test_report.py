"""The contamination report: numbers, files, and an HTML page that is self-contained and escaped."""
from __future__ import annotations

import base64
import csv
import io
import json
import os
import re

import numpy as np
import pytest
from PIL import Image

from clipdata.dedup import candidates, hashed_test_sets, overlap, report, search
from clipdata.pipeline.foundation import eval_sets

HOSTILE = '"><script>alert(1)</script><a href="https://evil.example/x">click</a>'


def thumb(colour) -> str:
    return candidates.thumbnail(Image.new("RGB", (300, 200), colour))


def make_result(n_matches: int = 3, hostile: bool = True, with_thumbs: bool = True) -> overlap.OverlapResult:
    ref = eval_sets.ImageRef("file", "/nowhere.png")
    sets = []
    for name, n in (("cifar<10>", 40), ("stl10", 10)):
        images = [eval_sets.TestImage(f"{i:04d}", f"class{i % 3}", ref) for i in range(n)]
        ts = eval_sets.TestSet(name, f"/data/{name}", "folder", images,
                              unreadable=[{"id": "0001", "error": "OSError: <bad> & broken"}])
        views = [{"image": i} for i in range(n)]
        views[1] = None
        sets.append(hashed_test_sets.HashedTestSet(ts, views))
    side = search.flatten(sets, ["image"])
    nearest = np.full(side.n_images, 30, np.uint8)
    nearest[:n_matches] = 2
    nearest[5] = search.NO_NEIGHBOUR
    pairs = []
    for i in range(n_matches):
        pairs.append({"test_set": "cifar<10>", "test_index": i, "test_id": f"{i:04d}", "key": f"0000{i:05d}",
                      "shard": "00000", "url": HOSTILE if hostile else f"http://x.test/{i}",
                      "caption": HOSTILE if hostile else f"caption {i}", "train_phash": "00" * 8, "distance": 2,
                      "view": "mirror", "verified": True, "score": 0.97, "method": "align", "detail": "ok",
                      "stage": "pixels", "reason": "the test picture lies in the training picture",
                      "test_thumb": thumb((200, 0, 0)) if with_thumbs else None,
                      "train_thumb": thumb((0, 200, 0)) if with_thumbs else None})
    # The same training key matched by a second test image: one blocklist line.
    pairs.append(dict(pairs[0], test_id="0039", test_index=39))
    pairs.append({**pairs[0], "key": "000000099", "verified": False, "score": 0.2, "method": "align",
                  "detail": "different shape <b>", "stage": "screen", "reason": "the colours differ"})
    config = overlap.OverlapConfig(shards=["/shards"], test_sets=[("cifar<10>", "/data/c"), ("stl10", "/data/s")],
                                   output="/out")
    counters = {"train_hashes": 1000, "candidates": len(pairs), "train_hashed_from_tar": 0}
    errors = [{"shard": "00003", "tar": None, "parquet": None, "stage": "search",
               "errors": ["tar unreadable <script>"]}]
    return overlap.OverlapResult(config, 10, ["image", "mirror"], sets, side, pairs, nearest, 4, errors,
                                 counters, 1.5)


def test_numbers_per_test_set():
    built = report.build_report(make_result(), {"stl10": {f"{i:04d}": i % 2 == 0 for i in range(10)}})
    cifar, stl = built["test_sets"]
    assert (cifar["name"], cifar["size"], cifar["unreadable"]) == ("cifar<10>", 40, 1)
    assert cifar["overlap"] == 4 and cifar["overlap_percent"] == pytest.approx(10.0)
    assert cifar["matched_pairs"] == 4 and cifar["rejected_pairs"] == 1
    assert cifar["overlap_ids"] == ["0000", "0001", "0002", "0039"]
    assert sum(cifar["nearest_distance_histogram"]) + cifar["nearest_distance_none"] == 39
    assert cifar["nearest_distance_histogram"][2] == 2          # 0000, 0002 (0001 is unreadable)
    assert cifar["nearest_distance_none"] == 1
    assert stl["overlap"] == 0 and stl["accuracy"]["n_overlap"] == 0 and stl["accuracy"]["p_value"] is None
    assert built["_blocklist"] == ["000000000", "000000001", "000000002"]
    assert built["training"]["shards_with_errors"] == 1


def test_files_are_written_and_html_is_self_contained_and_escaped(tmp_path):
    written = report.write_report(make_result(), str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["blocklist.txt", "pairs.csv", "report.html", "report.json"]
    assert (tmp_path / "blocklist.txt").read_text() == "000000000\n000000001\n000000002\n"
    assert json.loads((tmp_path / "report.json").read_text())["test_sets"][0]["overlap"] == 4
    assert "test_thumb" not in (tmp_path / "report.json").read_text()
    rows = list(csv.DictReader(io.StringIO((tmp_path / "pairs.csv").read_text())))
    assert [r["verdict"] for r in rows] == ["duplicate"] * 4 + ["rejected"]
    assert rows[0]["caption"] == HOSTILE
    assert (rows[-1]["stage"], rows[-1]["reason"]) == ("screen", "the colours differ")

    page = (tmp_path / "report.html").read_text()
    assert "<script" not in page.lower()
    assert "evil.example" in page                                # shown, as text
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:|//|javascript:)""", page, re.I)
    assert not re.search(r"<link\b|@import|url\(|<iframe|<object", page, re.I)
    assert html_escaped(HOSTILE) in page
    assert "cifar&lt;10&gt;" in page and "cifar<10>" not in page
    assert "&lt;bad&gt; &amp; broken" in page and "different shape &lt;b&gt;" in page
    # why each pair was decided, in words, and by which stage
    assert "the colours differ" in page and "decided by the stored thumbnail" in page
    assert page.count("decided by the pixels") == 4
    # Thumbnails are small JPEG data URLs, test image beside its training twin.
    sources = re.findall(r'src="(data:image/jpeg;base64,[^"]+)"', page)
    assert len(sources) == 2 * 5
    small = Image.open(io.BytesIO(base64.b64decode(sources[0].split(",", 1)[1])))
    assert max(small.size) <= candidates.THUMB_SIZE
    assert page.count('<img class="plot"') == 1 + 2              # overlap bars + a histogram per set
    assert "What to take away" in page and "cifar&lt;10&gt;: 4 of 40 test images (10.0%) have" in page
    assert written["blocklist"]["keys"] == 3
    assert "10.0%" in report.summary_table(written, str(tmp_path))


def html_escaped(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;") \
        .replace("'", "&#x27;")


def test_thumbnails_are_capped_with_a_note(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "THUMBS_PER_SET", 2)
    report.write_report(make_result(n_matches=5, hostile=False), str(tmp_path))
    page = (tmp_path / "report.html").read_text()
    cifar = page.split('id="set-cifar&lt;10&gt;"')[1].split("Candidates rejected")[0]
    assert cifar.count("data:image/jpeg;base64,") == 2 * 2
    assert "Thumbnails are shown for the first 2 pairs only" in cifar


def test_pairs_csv_holds_every_rejected_candidate_past_the_json_cap(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "LIST_CAP", 2)
    result = make_result(n_matches=1, hostile=False)
    rejected = result.pairs[-1]
    result.pairs += [dict(rejected, key=f"0000001{i:02d}") for i in range(5)]
    written = report.write_report(result, str(tmp_path))
    cifar = written["test_sets"][0]
    assert (cifar["rejected_pairs"], cifar["rejected_listed"], len(cifar["rejected"])) == (6, 2, 2)
    rows = list(csv.DictReader(io.StringIO((tmp_path / "pairs.csv").read_text())))
    assert sum(r["verdict"] == "rejected" for r in rows) == 6
    assert "pairs.csv holds every one" in (tmp_path / "report.html").read_text()


def test_accuracy_section_carries_the_caveats(tmp_path):
    predictions = {"cifar<10>": {f"{i:04d}": i < 30 or i in (0, 1, 2, 39) for i in range(40)}}
    written = report.write_report(make_result(), str(tmp_path), predictions)
    accuracy = written["test_sets"][0]["accuracy"]
    assert accuracy["n_overlap"] == 4 and accuracy["correct_overlap"] == 4
    page = (tmp_path / "report.html").read_text()
    assert "All / Clean / Overlap" in page and "not random splits" in page


def test_the_descriptor_options_and_what_it_left_out_are_said():
    result = make_result(hostile=False)
    result.similar = 0.8
    result.config.descriptor = True
    result.counters.update(descriptor_matches_hash_far=7, descriptor_matches_window_weak=5)
    built = report.build_report(result)
    o = built["options"]
    assert o["window_similar"] == pytest.approx(0.8 + search.WINDOW_EXTRA) and o["window_near"] == search.WINDOW_NEAR
    assert built["training"]["descriptor_matches_window_weak"] == 5
    page = report.render_html(built, {})
    assert (f"5 more on a crop window under cosine {0.8 + search.WINDOW_EXTRA:.2f} with pHashes more than "
            f"{search.WINDOW_NEAR} bits apart") in page
    assert o["crop_alike"] == search.CROP_ALIKE
    assert f"7 matches on a crop window under cosine {search.CROP_ALIKE:.2f} left out" in page
    assert "those found on the descriptor alone last" in page
    # a report made before the window rule and the crop rule (no such options) reads without them
    del o["window_similar"], o["window_near"], o["crop_alike"]
    older = report.render_html(built, {})
    assert "7 matches on a crop window left out" in older and "more on a crop window" not in older
    assert "descriptor alone last" not in older
