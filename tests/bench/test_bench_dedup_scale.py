"""bench/dedup.py scale, small: generated shards as clipdata download writes them, the dedup job,
the stage rates and the projection (the benchmark itself runs >= 1M x 10k; this keeps it working)."""
from __future__ import annotations

import math
import os
import sys

import pytest
from repo import BENCH

sys.path.insert(0, BENCH)

import dedup_scale  # noqa: E402


@pytest.mark.slow
def test_the_scale_benchmark_finds_every_planted_copy_and_projects_each_stage(tmp_path):
    lines = []
    m = dedup_scale.run(n_train=240, n_test=24, n_planted=5, rows_per_shard=100, workers=1,
                        folder=str(tmp_path / "scale"), log=lines.append, keep=True)
    assert (m["train"], m["test"], m["planted"]) == (240, 24, 5)
    assert m["recall"] == 1.0, "\n".join(lines)
    # every candidate was decided by the screen or the pixels, none by an error
    assert m["candidates"] == m["screened_out"] + m["checked_on_pixels"] > 0
    assert m["checked_on_pixels"] >= m["planted"]
    p = m["projection"]
    stages = p["ms_per_training_image"]
    assert set(stages) == {"signature (download)", "descriptors (thumbnail, centre)", "search (descriptor + pHash check)", "screen",
                           "pixels"}
    assert all(math.isfinite(v) and v >= 0 for v in stages.values())
    assert min(stages["signature (download)"], stages["descriptors (thumbnail, centre)"], stages["search (descriptor + pHash check)"]) > 0
    assert p["total_ms"] == pytest.approx(sum(stages.values()))
    # the signature timed again on the stored images (the same code as the job's, reused data or not)
    assert m["signature_timed"] == 100 and stages["signature (download)"] == m["signature_ms"] > 0
    # the screen: per candidate, plus each test image reduced once per group of its candidates
    from clipdata.dedup.overlap_steps import SCREEN_SPLIT

    assert m["screen_ms"] > 0 and m["screen_test_ms"] > 0 and m["screen_fresh_ms"] > 0
    assert stages["screen"] == pytest.approx(p["candidates_per_training_image"] * m["screen_ms"] + m["screen_test_ms"]
                                             * SCREEN_SPLIT * dedup_scale.TARGET_TEST / dedup_scale.TARGET_TRAIN)
    assert m["search_half_images"] == 12 and m["search_half_ms"] > 0      # timed on the first half too
    # each rate the fastest of RATE_PASSES passes, the first pass's projection printed beside it
    first = m["first_pass"]
    assert set(first) == {"signature_ms", "describe_ms", "screen_ms", "screen_test_ms", "pixel_ms"}
    assert all(0 < m[k] <= first[k] for k in first), (first, {k: m[k] for k in first})
    assert m["projection_first_pass"]["total_ms"] >= p["total_ms"]
    # the projection counts the candidates that are not planted copies (copies are rare at scale)
    assert m["unrelated_candidates"] <= m["candidates"] - m["planted"]
    assert p["candidate_rate"] == pytest.approx(m["unrelated_candidates"] / (240 * 24))
    text = "\n".join(lines)
    assert "Projection to 400,000,000 training x 100,000 test images" in text
    assert f"from the first passes alone the total is {m['projection_first_pass']['total_ms']:.3f}" in text
    assert "planted copies found: 5 of 5" in text
    assert os.path.exists(tmp_path / "scale" / dedup_scale.GENERATED)       # kept
    sizes = {"train": 240, "test": 24, "planted": 5, "rows_per_shard": 100}
    assert dedup_scale.generated(str(tmp_path / "scale"), sizes)["images"] == 240
    # other sizes are not reused
    assert dedup_scale.generated(str(tmp_path / "scale"), dict(sizes, train=480)) is None

    # --reuse: the same data, not generated again; the job and the timings run again
    lines.clear()
    again = dedup_scale.run(n_train=240, n_test=24, n_planted=5, rows_per_shard=100, workers=1,
                            folder=str(tmp_path / "scale"), log=lines.append, reuse=True)
    assert lines[0].startswith("reusing the data generated in")
    assert not any(line.startswith("generated") for line in lines)
    assert (again["recall"], again["candidates"], again["false_pairs"]) == (1.0, m["candidates"], m["false_pairs"])
    assert again["download_signature_ms"] == m["download_signature_ms"]       # as measured when generated
    assert not os.path.exists(tmp_path / "scale")       # removed unless --keep


def test_the_search_projection_takes_the_index_timed_at_the_target_size_when_there_is_one():
    m = {"test_images": 1000, "search_ms": 1.0, "search_half_images": 500, "search_half_ms": 0.6,
         "index_ms": 0.3, "index_target_ms": 0.9}
    assert dedup_scale.search_projection(m) == pytest.approx(1.0 - 0.3 + 0.9)
    assert dedup_scale.search_projection(dict(m, index_target_ms=None)) == pytest.approx(0.2 + 0.0008 * 100_000)


def test_the_index_is_timed_at_a_larger_size_on_the_rows_tiled():
    import numpy as np

    rng = np.random.default_rng(5)
    rows = rng.normal(size=(500, 32)).astype(np.float32)
    rows = (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float16)
    tiled = dedup_scale.tiled_rows(rows, 1700)
    assert tiled.shape == (1700, 32) and tiled.dtype == np.float16
    assert np.array_equal(tiled[:500], rows)                                  # the rows themselves first
    assert np.allclose(np.linalg.norm(tiled.astype(np.float32), axis=1), 1.0, atol=2e-3)
    cos = (tiled[500:1000].astype(np.float32) * rows.astype(np.float32)).sum(1)
    assert 0.3 < cos.mean() < 0.7 and cos.max() < 0.8                       # moved far off: no copies
    timed = dedup_scale.index_at_size_ms(rows, rows[:50].astype(np.float32), 25_000, 0.8, n_images=25)
    assert min(timed["index_ms"], timed["index_target_ms"], timed["index_tiled_ms"]) > 0
    assert timed["index_target_kind"] == "ivf"          # the kind the job builds at that size
    lines = []
    m = {"projection": {"candidates_per_training_image": 0.1, "candidate_rate": 1e-6, "pixel_rate": 1e-7,
                        "ms_per_training_image": {"search": 1.0}, "total_ms": 1.0, "core_hours": 1.0,
                        "false_flags_per_test_image": 0.1, "false_flags_per_test_image_bound": 0.1,
                        "pixel_pairs": 10},
         "train": 100, "test": 10, "dedup_wall_s": 1.0, "dedup_cpu_s": 1.0, "recall": 1.0, "planted": 1,
         "flagged_without_copy": 0, "clean_test_images": 9, "false_pairs": 0, "candidates": 3, "screened_out": 1,
         "checked_on_pixels": 2, "test_ms": 1.0, "search_ms": 0.5, "describe_ms": 0.5, "test_images": 10,
         "test_views": 200, "index_kinds": {"hash": "flat", "descriptor": "ivf"}, "screen_ms": 10.0,
         "pixel_ms": 60.0, "pairs_timed": 2, **timed}
    dedup_scale.report(m, lines.append)
    assert any("at 100,000 test images' rows" in line and "first half tiled" in line for line in lines)


def test_the_search_projection_fits_a_fixed_and_a_per_test_image_part():
    m = {"test_images": 1000, "search_ms": 1.0, "search_half_images": 500, "search_half_ms": 0.6}
    # 0.4 ms more for 500 more test images: 0.0008 per test image, 0.2 fixed
    assert dedup_scale.search_projection(m) == pytest.approx(0.2 + 0.0008 * dedup_scale.TARGET_TEST)
    # one size, or a half that timed slower (noise): all of it per test image, an upper bound
    assert dedup_scale.search_projection({"test_images": 1000, "search_ms": 1.0}) == pytest.approx(100.0)
    assert dedup_scale.search_projection(dict(m, search_half_ms=1.1)) == pytest.approx(100.0)
    # with the rows an IVF query visits as the measure of work: a + b * rows
    w = dict(m, search_work=4000.0, search_half_work=2000.0, target_work=30000.0)
    assert dedup_scale.search_projection(w) == pytest.approx(0.2 + 0.0002 * 30000)


def test_an_ivf_query_visits_the_centroids_and_nprobe_lists():
    from clipdata.dedup.index import DESCRIPTOR_NPROBE, default_nlist

    assert dedup_scale.rows_visited(1000, 20, "flat") == 20000
    nlist = default_nlist(2_000_000)
    assert dedup_scale.rows_visited(100_000, 20, "ivf") == pytest.approx(nlist + DESCRIPTOR_NPROBE * 2_000_000 / nlist)
    # ~sqrt of the rows: 100x the test images, ~10x the work
    ratio = dedup_scale.rows_visited(100_000, 20, "ivf") / dedup_scale.rows_visited(1000, 20, "ivf")
    assert 5 < ratio < 20
