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
                        folder=str(tmp_path / "scale"), log=lines.append)
    assert (m["train"], m["test"], m["planted"]) == (240, 24, 5)
    assert m["recall"] == 1.0, "\n".join(lines)
    # every candidate was decided by the screen or the pixels, none by an error
    assert m["candidates"] == m["screened_out"] + m["checked_on_pixels"] > 0
    assert m["checked_on_pixels"] >= m["planted"]
    p = m["projection"]
    stages = p["ms_per_training_image"]
    assert set(stages) == {"signature (download)", "descriptor (thumbnail)", "centre descriptor", "search (hash + descriptor)", "screen",
                           "pixels"}
    assert all(math.isfinite(v) and v >= 0 for v in stages.values())
    assert min(stages["signature (download)"], stages["descriptor (thumbnail)"], stages["search (hash + descriptor)"]) > 0
    assert p["total_ms"] == pytest.approx(sum(stages.values()))
    # the projection counts the candidates that are not planted copies (copies are rare at scale)
    assert m["unrelated_candidates"] <= m["candidates"] - m["planted"]
    assert p["candidate_rate"] == pytest.approx(m["unrelated_candidates"] / (240 * 24))
    text = "\n".join(lines)
    assert "Projection to 400,000,000 training x 100,000 test images" in text
    assert "planted copies found: 5 of 5" in text
    assert not os.path.exists(tmp_path / "scale")       # removed unless --keep
