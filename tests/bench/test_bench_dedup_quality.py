"""bench/dedup.py quality, small: the quality table measured through the whole dedup job (the
benchmark itself runs 1,692 originals; this keeps it working)."""
from __future__ import annotations

import os
import random
import sys

import pytest
from repo import BENCH

sys.path.insert(0, BENCH)

import dedup  # noqa: E402
import dedup_quality  # noqa: E402


@pytest.mark.slow
def test_the_quality_benchmark_runs_the_job_and_tells_found_from_lost(tmp_path):
    # without scikit-image's photos (not installed by the suite): dead leaves are the photo-like ones
    originals = dedup.make_originals(0, n_leaves=10, n_web=10, n_drawing=6, n_logo=6, n_text=6, photos=False)
    random.Random(0).shuffle(originals)
    originals = originals[:30]
    lines = []
    m = dedup_quality.run(originals, 1, str(tmp_path / "quality"), log=lines.append)
    text = "\n".join(lines)
    # every original is one copy in each direction, in one cell of the table
    assert sum(total for _, total in m["recall"].values()) == 2 * len(originals)
    assert {key.split()[0] for key in m["recall"]} == set(dedup.TRANSFORMS[:len(originals)])
    found = sum(hits for hits, _ in m["recall"].values())
    lost = sum(len(items) for items in m["lost"].values())
    assert found + lost == 2 * len(originals) and found >= 0.85 * 2 * len(originals), text
    assert set(m["lost"]) <= {"no candidate", "screen", "pixels"}
    assert m["unrelated_pairs"] + m["lookalike_pairs"] == 2 * (30 * 30 - 30)
    assert m["false_unrelated"] == 0, text
    assert "Recall through the whole job" in text and "jpeg30" in text
    assert not os.path.exists(tmp_path / "quality")       # removed unless keep
