"""What `clipdata dedup` prints while it runs: counts, rates and ETA; quiet lines in a log."""
from __future__ import annotations

import io

from clipdata.dedup import progress


def test_a_log_gets_a_plain_line_now_and_then_and_the_final_one(monkeypatch):
    stream = io.StringIO()                       # not a terminal
    now = [1000.0]
    monkeypatch.setattr(progress.time, "time", lambda: now[0])
    with progress.Counter("hashed", 4, "test images", stream=stream) as counter:   # started at 1000
        for t in (1001.0, 1002.0, 1040.0, 1041.0):  # shown: the first, then not before LOG_EVERY
            now[0] = t
            counter.add()
    lines = stream.getvalue().splitlines()
    assert lines == ["dedup: hashed 1/4 test images (1.0/s, ETA 3s)",
                     "dedup: hashed 3/4 test images (0.1/s, ETA 13s)",
                     "dedup: hashed 4 test images in 41.0 s"]
    assert "\r" not in stream.getvalue()


def test_the_watcher_counts_what_the_workers_recorded(tmp_path):
    work = str(tmp_path)
    watcher = progress.ShardWatcher(work, shards=2, stream=io.StringIO())
    progress.record(work, "search", "00000", {"images": 100, "candidates": 7})
    text = watcher.text()
    assert text.startswith("dedup: searched 1/2 shards (100 training images, ")
    assert "screened 0/7 candidates (0 rejected on thumbnails), 0 checked on pixels; ETA " in text
    progress.record(work, "search", "00001", {"images": 50, "candidates": 3})
    progress.record(work, "search", "00001", {"images": 50, "candidates": 3})  # a retry: rewritten
    assert "searched 2/2 shards (150 training images" in watcher.text()
    assert watcher.text().endswith("screened 0/10 candidates (0 rejected on thumbnails), 0 checked on pixels; ETA ?")
    # the screen's notes, one per worker with its running totals, are added up; its ETA follows them
    progress.record(work, "screen", "a1", {"screened": 4, "screened_out": 3})
    progress.record(work, "screen", "b2", {"screened": 1, "screened_out": 1})
    progress.record(work, "verify", "00000", {"pixels": 2})
    text = watcher.text()
    assert "screened 5/10 candidates (4 rejected on thumbnails), 2 checked on pixels; ETA " in text
    assert not text.endswith("ETA ?") and not text.endswith("ETA -")


def test_after_the_search_the_rate_is_the_search_s_and_without_verification_nothing_is_screened(tmp_path, monkeypatch):
    work = str(tmp_path)
    clock = [1000.0]
    monkeypatch.setattr(progress.time, "time", lambda: clock[0])
    watcher = progress.ShardWatcher(work, shards=1, stream=io.StringIO())
    progress.record(work, "search", "00000", {"images": 500, "candidates": 4})
    clock[0] += 10
    assert "(500 training images, 50/s)" in watcher.text()
    clock[0] += 90                                          # the screen and the pixels: the rate stays
    assert "(500 training images, 50/s)" in watcher.text()
    unverified = progress.ShardWatcher(work, shards=1, stream=io.StringIO(), screening=False)
    text = unverified.text()
    assert "4 candidates (not verified)" in text and "screened" not in text and text.endswith("ETA -")
